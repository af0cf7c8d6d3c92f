"""Dense, lexical, hybrid and memstream search find planted facts; users are isolated; bad input is refused."""

from __future__ import annotations

from datetime import datetime

import pytest

from memstream.memory.store import UnknownUserError
from memstream.retrieval.errors import RetrievalError
from memstream.retrieval.search_args import MAX_K

PLANTS = {
    "kitten": "I adopted a grey kitten named Pixel from the shelter.",
    "marathon": "I ran the charity half marathon in 2 hours 5 minutes.",
    "lisbon": "My sister Clara moved to Lisbon for a new job.",
}


@pytest.fixture
def retriever(shared):
    return shared[1]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid", "memstream"])
@pytest.mark.parametrize(
    "query, plant",
    [
        ("What pet did Ann adopt?", "kitten"),
        ("How long did the half marathon take?", "marathon"),
        ("Where does Clara live now?", "lisbon"),
    ],
)
def test_each_mode_finds_the_planted_fact(retriever, mode, query, plant):
    result = retriever.search("ann", query, k=3, mode=mode)
    assert result.hits, f"{mode} found nothing for {query!r}"
    assert PLANTS[plant] in [hit.turn.text for hit in result.hits[:3]]
    top = result.hits[0]
    assert top.rank == 1 and top.turn.user_id == "ann"
    if mode in ("dense", "hybrid", "memstream"):
        assert any(h.dense_score is not None for h in result.hits)
    if mode == "bm25":
        assert all(h.dense_score is None and h.lexical_score > 0 for h in result.hits)


def test_hits_carry_scores_time_session_and_source(retriever):
    result = retriever.search("ann", "grey kitten Pixel", k=5)
    hit = next(h for h in result.hits if "Pixel" in h.turn.text)
    assert hit.event_time == datetime(2023, 3, 10, 18, 0)
    assert hit.source_id == "S1:3" and hit.session_id is not None
    assert hit.matched_via in ("turn", "round", "statement", "fact", "time")
    data = result.to_dict()
    assert data["hits"][0]["fused_score"] >= data["hits"][-1]["fused_score"]
    assert {"embed", "total"} <= set(result.timings)


def test_users_never_see_each_other(retriever):
    for mode in ("dense", "bm25", "hybrid", "memstream"):
        for hit in retriever.search("bob", "grey kitten named Pixel shelter", k=20, mode=mode).hits:
            assert hit.turn.user_id == "bob"
        for hit in retriever.search("ann", "black kitten named Pixel too", k=50, mode=mode).hits:
            assert hit.turn.user_id == "ann" and "black kitten" not in hit.turn.text


def test_conversation_filter(retriever):
    hits = retriever.search("ann", "Pixel kitten", k=10, conversation_id="c1").hits
    assert hits and all(h.turn.conversation_id == "c1" for h in hits)
    assert retriever.search("ann", "Pixel kitten", k=10, conversation_id="nope").hits == []


def test_session_aggregation(retriever):
    sessions = retriever.search_sessions("ann", "half marathon charity run time", k=2)
    assert sessions and any("marathon" in h.turn.text for h in sessions[0].hits)
    assert len({s.session_id for s in sessions}) == len(sessions)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query": ""}, "empty"),
        ({"query": "   "}, "empty"),
        ({"query": "kitten", "k": 0}, "positive"),
        ({"query": "kitten", "k": -3}, "positive"),
        ({"query": "kitten", "k": MAX_K + 1}, "too large"),
        ({"query": "kitten", "mode": "magic"}, "unknown search mode"),
        ({"query": "kitten", "time_mode": "sometimes"}, "time_mode"),
    ],
)
def test_bad_input_is_refused_clearly(retriever, kwargs, message):
    with pytest.raises(RetrievalError, match=message):
        retriever.search("ann", **kwargs)


def test_unknown_and_invalid_users(retriever):
    with pytest.raises(UnknownUserError, match="unknown user 'carol'"):
        retriever.search("carol", "kitten")
    with pytest.raises(RetrievalError, match="user id"):
        retriever.search("", "kitten")


def test_a_search_waits_only_for_changes_to_its_own_users_index(retriever):
    """Searches ranked under the retriever's one lock, so every chat's search queued behind every other user's index
    work. Now a search holds its user's lock: another user's write (holding the retriever's lock and that user's)
    does not hold it up, while a change to its own user's index does."""
    import threading

    retriever.search("bob", "grey kitten", k=3)  # the query vector is cached, so the timed searches only rank
    results: list = []

    def search() -> None:
        results.append(retriever.search("bob", "grey kitten", k=3))

    with retriever._lock, retriever._users["ann"].lock:  # ann's index being changed
        thread = threading.Thread(target=search)
        thread.start()
        thread.join(10)
        assert not thread.is_alive() and results and results[0].hits
    with retriever._users["bob"].lock:  # bob's own index being changed: his search waits for it
        thread = threading.Thread(target=search)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()
    thread.join(10)
    assert len(results) == 2
