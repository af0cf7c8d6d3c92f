"""retrieval.round_vectors: a round key's vector pooled from its turns' statement vectors (the default) instead of a
model pass over the round's own text; the same vectors in process and in PostgreSQL, refreshed when a neighbour
arrives, reusing the statement vectors already indexed, and a cache built the other way is rebuilt."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from memstream.config import ConfigError, load_settings
from memstream.memory import NewTurn, open_memory
from memstream.retrieval import keys as keymod
from tests.conftest import PG_URL, reset_postgres
from tests.small_embedder import HashingEmbedder, recording

FIRST = [
    NewTurn("user", "My sister Clara moved to Lisbon last spring.", speaker="Ana", event_time=datetime(2024, 5, 2, 10)),
    NewTurn("assistant", "Lisbon is lovely in May. Does she like it?", speaker="Bot", event_time=datetime(2024, 5, 2, 10, 1)),
]
SECOND = [
    NewTurn("user", "She loves the trams and paints the river at sunrise.", speaker="Ana", event_time=datetime(2024, 5, 2, 10, 2)),
    NewTurn("assistant", "Sunrise over the Tagus must be a sight.", speaker="Bot", event_time=datetime(2024, 5, 2, 10, 3)),
]


def settings(url: str, tmp_path, **retrieval):
    return load_settings(db_url=url, home=str(tmp_path), retrieval=retrieval)


def expected_rounds(embedder: HashingEmbedder, turns) -> dict[int, np.ndarray]:
    """Each turn's round vector as the rule says: the pool of the statement vectors of it and its neighbours."""
    statements = [keymod.statement_key_text(t, keymod.other_speaker(turns, i)) for i, t in enumerate(turns)]
    vectors = embedder.embed(statements)
    return {t.id: keymod.pool([vectors[j] for j in keymod.round_window(len(turns), i, 1)]) for i, t in enumerate(turns)}


@pytest.mark.parametrize("background", [True, False])
def test_round_vectors_are_pooled_statement_vectors_and_follow_a_new_neighbour(tmp_path, background):
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(settings(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, background_indexing=background), embedder) as memory:
        memory.add("ana", "chat", FIRST)
        memory.flush(30)
        index = memory.retriever._users["ana"]
        first = memory.list_turns("ana")
        for turn_id, vector in expected_rounds(HashingEmbedder(), first).items():
            np.testing.assert_allclose(index.dense["round"].vector(keymod.key_id(turn_id, "round")), vector, atol=1e-6)
        texts.clear()
        memory.add("ana", "chat", SECOND)
        memory.flush(30)
        turns = memory.list_turns("ana")
        # The second turn's round now includes the third turn: its vector was replaced, not left as it was.
        for turn_id, vector in expected_rounds(HashingEmbedder(), turns).items():
            np.testing.assert_allclose(index.dense["round"].vector(keymod.key_id(turn_id, "round")), vector, atol=1e-6)
        # Only the new turns' turn and statement texts were embedded: no round text, and the earlier turns'
        # statement vectors came from the index.
        statements = {keymod.statement_key_text(t, keymod.other_speaker(turns, i)) for i, t in enumerate(turns)}
        assert not [t for t in texts if t.startswith("[2 May 2024] ")]
        assert sorted(t for t in texts if t in statements) == sorted(
            keymod.statement_key_text(t, keymod.other_speaker(turns, i)) for i, t in enumerate(turns) if i >= 2)
        assert len(texts) == 4


def test_a_pooled_round_waits_for_a_statement_an_earlier_batch_is_embedding():
    """With two indexer threads, a round refreshed by the next turn was taken while its own turn's statement was still
    being embedded in the other thread's batch, and embedded that statement a second time. It now waits for the
    earlier batch to land (and reuses the vector); it never waits for a later batch, so two batches cannot deadlock."""
    import threading
    import time

    from memstream.retrieval.dense_jobs import DenseJob, DenseQueue

    lock = threading.RLock()
    queue, index = DenseQueue(lock), object()
    statement = DenseJob(index, "ana", "statement", 1, "Ana said hello.", 1)
    with lock:
        queue.put([statement])
    earlier = queue.take(10)
    round_job = DenseJob(index, "ana", "round", 1, "round", 1, parts=((statement.key, statement.text),))
    later_statement = DenseJob(index, "ana", "statement", 2, "Bo said hi.", 2)
    with lock:
        queue.put([round_job])
    batch = queue.take(10)
    with lock:
        queue.put([later_statement])
    queue.take(10)  # a later batch, still out
    returned = threading.Event()

    def wait():
        with lock:
            queue.wait_for_parts(batch, 10)
        returned.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    assert not returned.is_set()  # the statement is still out in the earlier batch
    queue.done(earlier)
    assert returned.wait(5)
    waiter.join()
    # A part only a later batch holds is not waited for (that batch may be waiting on this one).
    late_round = DenseJob(index, "ana", "round", 2, "round", 2, parts=((later_statement.key, later_statement.text),))
    late_round.batch_no = 1
    started = time.monotonic()
    with lock:
        queue.wait_for_parts([late_round], 10)
    assert time.monotonic() - started < 1


def test_encoded_round_vectors_embed_the_round_text(tmp_path):
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(settings(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, round_vectors="encoded"), embedder) as memory:
        memory.add("ana", "chat", FIRST + SECOND)
        memory.flush(30)
        turns = memory.list_turns("ana")
        vector = memory.retriever._users["ana"].dense["round"].vector(keymod.key_id(turns[1].id, "round"))
        np.testing.assert_allclose(vector, HashingEmbedder().embed([keymod.round_key_text(turns, 1, 1)])[0], atol=1e-6)
    assert [t for t in texts if t.startswith("[2 May 2024] ")]


def test_a_cache_built_with_encoded_round_vectors_is_rebuilt_with_pooled_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_memory(settings(url, tmp_path, round_vectors="encoded"), HashingEmbedder()) as memory:
        memory.add("ana", "chat", FIRST + SECOND)
        memory.flush(30)
    with open_memory(settings(url, tmp_path), HashingEmbedder()) as memory:
        memory.flush(30)
        turns = memory.list_turns("ana")
        rounds = memory.retriever._users["ana"].dense["round"]
        for turn_id, vector in expected_rounds(HashingEmbedder(), turns).items():
            np.testing.assert_allclose(rounds.vector(keymod.key_id(turn_id, "round")), vector, atol=1e-6)


def test_pooled_round_vectors_need_statement_vectors():
    with pytest.raises(ConfigError, match="add 'statement' to dense_kinds or set round_vectors to 'encoded'"):
        load_settings(retrieval={"dense_kinds": ["turn", "round", "fact"]})
    assert load_settings(retrieval={"dense_kinds": ["turn", "round", "fact"], "round_vectors": "encoded"}).retrieval.round_vectors == "encoded"
    assert load_settings(retrieval={"dense_kinds": ["turn", "fact"]}).retrieval.round_vectors == "statements"  # no round vectors at all
    with pytest.raises(ConfigError, match="round_vectors"):
        load_settings(retrieval={"round_vectors": "averaged"})


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="MEMSTREAM_TEST_PG_URL not set (CI starts a PostgreSQL server)")
def test_postgres_writes_the_same_pooled_round_vectors_at_once(tmp_path):
    from sqlalchemy import create_engine, text

    reset_postgres(PG_URL)
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(settings(PG_URL, tmp_path), embedder) as memory:
        memory.add("ana", "chat", FIRST)
        texts.clear()
        memory.add("ana", "chat", SECOND)
        assert len(texts) == 4  # the new turns' turn and statement keys; the earlier statement vectors were read back
        turns = memory.list_turns("ana")
        assert memory.retriever.embed_deferred(older_than_s=0) == 0  # a pooled round is never left without its vector
    assert not [t for t in texts if t.startswith("[2 May 2024] ")]
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT turn_id, embedding::text FROM index_keys WHERE kind = :kind"),
                                     {"kind": keymod.KIND_CODE["round"]}).all())
    finally:
        engine.dispose()
    for turn_id, vector in expected_rounds(HashingEmbedder(), turns).items():
        np.testing.assert_allclose(np.array(rows[turn_id].strip("[]").split(","), dtype=np.float32), vector, atol=1e-5)
