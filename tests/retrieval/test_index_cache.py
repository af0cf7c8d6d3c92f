"""The indexes are caches of the database: forget, deleted or corrupt files, model changes."""

from __future__ import annotations

import shutil
from datetime import datetime

import faiss
import numpy as np
import pytest

from memstream.memory.index_files import cache_dir_for
from memstream.memory.model import NewTurn
from memstream.retrieval.errors import EmbeddingModelMismatch
from memstream.retrieval.vector_index import IndexFileError, VectorIndex
from tests.retrieval.conftest import session

QUERIES = ["What pet did Ann adopt?", "half marathon time", "Where does Clara live now?", "documentary about the sea"]


def _ranked(retriever, user="ann"):
    return [[(h.turn.id, round(h.fused_score, 6)) for h in retriever.search(user, q, k=8, now=datetime(2023, 7, 1)).hits] for q in QUERIES]


def test_forget_removes_from_every_index(planted, settings, make_retriever):
    retriever = make_retriever(settings, planted)
    assert retriever.search("bob", "black kitten Pixel", k=5).hits
    planted.forget_user("bob")
    retriever.sync()
    index = retriever._users.get("bob")
    assert index is None or (all(len(i) == 0 for i in index.dense.values()) and all(len(i) == 0 for i in index.lexical.values()))
    with pytest.raises(Exception, match="unknown user 'bob'"):
        retriever.search("bob", "black kitten Pixel", k=5)
    # A fresh process (from the saved cache) does not bring bob back, and ann is intact.
    reopened = make_retriever(settings, planted)
    assert "bob" not in reopened._users
    assert any("Pixel" in h.turn.text for h in reopened.search("ann", "kitten Pixel", k=3).hits)


def test_deleting_one_turn_takes_effect_at_once(planted, settings, make_retriever):
    retriever = make_retriever(settings, planted)
    target = next(h for h in retriever.search("ann", "kitten Pixel shelter", k=3).hits if "Pixel" in h.turn.text)
    planted.delete_turn("ann", target.turn.id)
    for mode in ("dense", "bm25", "hybrid", "memstream"):
        # Even before sync, the database read drops it; after sync no index holds its keys.
        assert target.turn.id not in [h.turn.id for h in retriever.search("ann", "kitten Pixel shelter", k=20, mode=mode).hits]
    retriever.sync()
    index = retriever._users["ann"]
    assert all(target.turn.id * 8 + code not in lex for code, lex in enumerate(index.lexical.values()))


def test_index_deleted_from_disk_is_rebuilt_identically(planted, settings, make_retriever):
    first = make_retriever(settings, planted)
    before = _ranked(first)
    cache = cache_dir_for(settings, planted)
    assert (cache / "metadata.json").exists()
    shutil.rmtree(cache)
    rebuilt = make_retriever(settings, planted)
    assert (cache / "metadata.json").exists()
    assert _ranked(rebuilt) == before
    # And a third process loads the saved cache instead of re-embedding: same answers.
    assert _ranked(make_retriever(settings, planted)) == before


def test_corrupt_or_truncated_index_file_is_rebuilt(planted, settings, make_retriever):
    before = _ranked(make_retriever(settings, planted))
    cache = cache_dir_for(settings, planted)
    files = sorted(cache.glob("users/*/*.faiss"))
    assert files
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    files[-1].write_bytes(b"garbage" * 10)  # corrupt
    assert _ranked(make_retriever(settings, planted)) == before
    (cache / "metadata.json").write_text("{not json", encoding="utf-8")
    assert _ranked(make_retriever(settings, planted)) == before


def test_new_turns_are_caught_up_after_restart(planted, settings, make_retriever):
    make_retriever(settings, planted)
    planted.ingest_sessions("ann", [session("c1", datetime(2023, 6, 30), [("Ann", "I bought a turquoise canoe yesterday.")], "S4")])
    fresh = make_retriever(settings, planted)
    assert "turquoise canoe" in fresh.search("ann", "turquoise canoe", k=1).hits[0].turn.text
    # Live path: a turn appended to an existing session is searchable right after add_turns_to_index.
    added = planted.add_turns("ann", "c1", [NewTurn("user", "The canoe leaks a little.", "Ann")])
    assert fresh.add_turns_to_index(added) == 1
    assert "leaks" in fresh.search("ann", "does the canoe leak", k=1, mode="bm25").hits[0].turn.text


def test_other_embedding_model_is_detected(planted, settings, make_retriever):
    make_retriever(settings, planted)  # embeds with the default model
    other = settings.model_copy(update={"embedder": settings.embedder.model_copy(update={"model": "some-other-model"})})
    with pytest.raises(EmbeddingModelMismatch, match="memstream memory reembed"):
        make_retriever(other, planted, load_embedder=False)


def test_vector_index_switches_to_ann_and_keeps_recall(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    vectors = (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact, approx = VectorIndex(32, ann_threshold=10_000), VectorIndex(32, ann_threshold=1000)
    ids = np.arange(3000, dtype=np.int64) * 8
    exact.add(ids, vectors)
    approx.add(ids, vectors)
    assert approx.is_approximate and not exact.is_approximate
    found = [len(set(exact.search(q, 10)[0]) & set(approx.search(q, 10)[0])) / 10 for q in vectors[:50]]
    assert np.mean(found) >= 0.95
    approx.remove(ids[:5])
    assert not set(ids[:5]) & set(approx.search(vectors[0], 20)[0].tolist())
    approx.save(tmp_path / "a.faiss")
    loaded = VectorIndex.load(tmp_path / "a.faiss", 32, 1000, expected_count=2995)
    assert loaded.is_approximate and len(loaded) == 2995
    with pytest.raises(IndexFileError, match="dimension"):
        VectorIndex.load(tmp_path / "a.faiss", 16, 1000)


def test_ivf_index_retrains_as_it_grows_and_filters_exactly():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(30, 32))
    vectors = (centers[rng.integers(0, 30, 9000)] + 0.3 * rng.normal(size=(9000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(9000, dtype=np.int64) * 8
    index = VectorIndex(32, ann_threshold=1000)
    index.add(ids[:2200], vectors[:2200])
    lists_before = faiss.downcast_index(index._index.index).nlist
    for start in range(2200, 9000, 400):  # grows past 4x its training size: the quantizer is retrained
        index.add(ids[start : start + 400], vectors[start : start + 400])
    assert index.is_approximate and len(index) == 9000
    assert faiss.downcast_index(index._index.index).nlist > lists_before
    exact = vectors @ vectors[7]
    assert index.search(vectors[7], 10)[0].tolist()[:5] == (np.argsort(-exact)[:5] * 8).tolist()
    # A filter to 25 scattered ids returns exactly their best 10, however few lists hold them.
    allowed = ids[rng.choice(9000, 25, replace=False)]
    best = allowed[np.argsort(-(vectors[allowed // 8] @ vectors[7]))[:10]]
    assert index.search(vectors[7], 10, allowed=allowed)[0].tolist() == best.tolist()


def test_faiss_threads_setting_applies_and_search_is_unchanged(planted, settings, make_retriever):
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(2)
        default_ranking = _ranked(make_retriever(settings, planted))
        one_thread = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"faiss_threads": 1})})
        ranking = _ranked(make_retriever(one_thread, planted))
        assert faiss.omp_get_max_threads() == 1
        assert ranking == default_ranking
    finally:
        faiss.omp_set_num_threads(before)


def test_ids_reused_after_deletes_in_separate_catch_ups_are_indexed(settings, bare_store, make_retriever):
    """SQLite gives a new turn the highest stored id + 1: once the top turns are deleted, one catch-up each (as
    Memory.delete_turn does), the next turns reuse their ids and must still be indexed."""
    retriever = make_retriever(settings, bare_store, cache_dir=None)
    first = bare_store.add_turns("ann", "c1", [NewTurn("user", "The red bicycle is in the garage."), NewTurn("user", "I bake bread on Sundays.")])
    retriever.sync(save=False)
    for turn in first:
        bare_store.delete_turn("ann", turn.id)
        retriever.sync(save=False)
    again = bare_store.add_turns("ann", "c1", [NewTurn("user", "My sister lives in Lisbon."), NewTurn("user", "The cat sleeps on the sofa.")])
    assert [t.id for t in again] == [t.id for t in first]  # the premise: the ids were handed out again
    retriever.sync(save=False)
    assert retriever.indexed_turns("ann") == 2
    for query, text in (("Where does my sister live?", "My sister lives in Lisbon."), ("Where does the cat sleep?", "The cat sleeps on the sofa.")):
        assert retriever.search("ann", query, k=1, mode="dense").hits[0].turn.text == text


def test_a_search_runs_on_one_openmp_thread_and_leaves_the_callers_count(monkeypatch):
    """A team of OpenMP threads per query spins on a busy machine (13 ms a search instead of 12 us): each search runs
    on one thread, and the calling thread's count (which torch shares) is put back afterwards."""
    index = VectorIndex(8)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add(np.arange(50, dtype=np.int64), vectors)
    seen = []
    real_search = faiss.IndexIDMap.search
    monkeypatch.setattr(faiss.IndexIDMap, "search", lambda self, *a, **k: seen.append(faiss.omp_get_max_threads()) or real_search(self, *a, **k))
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        ids, _ = index.search(vectors[3], 5)
        assert ids[0] == 3
        assert index.search(vectors[7], 5, allowed=np.array([7, 8]))[0][0] == 7
        assert seen == [1, 1] and faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)
