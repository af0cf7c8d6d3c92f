"""BM25 index: stemming, incremental adds, replacement, removal, restriction."""

from __future__ import annotations

import numpy as np

from memstream.retrieval.lexical import LexicalIndex


def test_bm25_ranks_stemmed_matches_and_grows_incrementally():
    index = LexicalIndex()
    index.add([1, 2], ["Melanie painted a sunrise by the lake", "Caroline joined a support group"])
    ids, scores = index.search("When did Melanie paint the sunrise?", 5)
    assert ids.tolist() == [1] and scores[0] > 0
    index.add([3], ["Painting sunsets and sunrises relaxes Melanie"])
    ids, _ = index.search("paint sunrise", 5)
    assert set(ids.tolist()) == {1, 3}
    # Rarer terms weigh more: "caroline" appears once, "melanie" twice.
    ids, _ = index.search("caroline melanie", 5)
    assert ids[0] == 2


def test_replace_remove_and_restrict():
    index = LexicalIndex()
    index.add([1, 2, 3], ["red kayak", "blue kayak", "green kayak"])
    index.add([2], ["yellow canoe"])  # replaces id 2
    assert sorted(index.search("kayak", 10)[0].tolist()) == [1, 3]
    index.remove([1])
    assert index.search("kayak", 10)[0].tolist() == [3] and len(index) == 2
    assert index.search("kayak canoe", 10, allowed=np.array([2]))[0].tolist() == [2]
    assert index.search("the of and", 10)[0].tolist() == []


def _bm25_brute_force(texts: dict[int, str], query: str) -> dict[int, float]:
    """Plain BM25 over every document (the same idf and k1, b as the index)."""
    index = LexicalIndex()
    tokens = {i: index.tokenizer(t) for i, t in texts.items()}
    terms = set(index.tokenizer(query))
    avgdl = sum(len(t) for t in tokens.values()) / len(tokens)
    scores: dict[int, float] = {}
    for term in terms:
        df = sum(term in t for t in tokens.values())
        if df == 0:
            continue
        idf = np.log1p((len(tokens) - df + 0.5) / (df + 0.5))
        for i, t in tokens.items():
            tf = t.count(term)
            if tf:
                scores[i] = scores.get(i, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(t) / avgdl))
    return scores


def test_pruned_search_returns_the_exact_bm25_top_k():
    # Common terms ("lisbon", "paint") in a large share of documents, rare ones (names) in few:
    # the pruned search must still return exactly the brute-force top k, with its scores.
    rng = np.random.default_rng(3)
    names = [f"name{i}" for i in range(40)]
    texts = {
        i: f"{names[rng.integers(40)]} {rng.choice(['painted', 'cooked', 'sang'])} in {rng.choice(['Lisbon', 'Oslo'])} "
        + " ".join(rng.choice(["again", "happily", "today", "twice"], rng.integers(0, 4)))
        for i in range(3000)
    }
    index = LexicalIndex()
    index.add(list(texts), list(texts.values()))
    for query in ("did name3 paint in Lisbon today", "name7 name8 sang Oslo", "Lisbon painted"):
        expected = _bm25_brute_force(texts, query)
        ids, scores = index.search(query, 10)
        ranked = sorted(expected.values(), reverse=True)
        assert np.allclose(scores, ranked[:10], rtol=1e-5)
        assert all(abs(expected[i] - s) < 1e-4 for i, s in zip(ids.tolist(), scores.tolist()))
