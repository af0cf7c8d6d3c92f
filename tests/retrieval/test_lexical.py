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
