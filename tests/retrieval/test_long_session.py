"""A live conversation is one session that only grows: catching the index up after a turn must read a
bounded number of rows, whatever the session's length, and give the same keys as indexing it all at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.memory.model import NewTurn
from memstream.retrieval.retriever import CONTEXT_LOOKBACK
from tests.store_reads import rows_read

T0 = datetime(2024, 1, 1, 9, 0)


def _say(store, session_id: int, i: int, speaker: str | None = None) -> None:
    role = "user" if i % 2 == 0 else "assistant"
    text = f"I went hiking with Leo, day {i}." if role == "user" else f"Noted, thanks for telling me about day {i}."
    store.add_turns("ann", "daily", [NewTurn(role, text, speaker or role, T0 + timedelta(minutes=7 * i))], session_id=session_id)


def _keys(retriever) -> list[tuple]:
    """Every key text the retriever indexes from now on: (kind, item id, text, a pooled round's statement parts)."""
    recorded: list[tuple] = []
    add_jobs = retriever._add_jobs

    def record(jobs, refresh, **options):
        recorded.extend((job.kind, job.item_id, job.text, job.parts) for job in jobs)
        return add_jobs(jobs, refresh, **options)

    retriever._add_jobs = record
    return recorded


def test_catching_up_after_a_turn_reads_the_same_rows_in_a_long_session(settings, bare_store, make_retriever):
    store = bare_store
    session_id = store.new_session("ann", "daily", started_at=T0)
    retriever = make_retriever(settings, store, cache_dir=None)
    reads = {}
    for i in range(100):
        _say(store, session_id, i)
        _, rows = rows_read(store, lambda: retriever.sync(save=False))
        if i in (20, 99):
            reads[i] = rows
    assert reads[20] == reads[99] <= 2 * CONTEXT_LOOKBACK, reads


def test_keys_caught_up_turn_by_turn_match_indexing_the_session_at_once(settings, bare_store, make_retriever):
    """Including a monologue longer than the look-back, where the nearest other speaker lies further back."""
    store = bare_store
    session_id = store.new_session("ann", "daily", started_at=T0)
    live = make_retriever(settings, store, cache_dir=None)
    live_keys = _keys(live)
    speakers = ["Ann", "Bob"] * 15 + ["Ann"] * (CONTEXT_LOOKBACK + 8) + ["Bob", "Ann"] * 10
    for i, speaker in enumerate(speakers):
        _say(store, session_id, i, speaker)
        live.sync(save=False)
    at_once = make_retriever(settings, store, cache_dir=None, sync=False)
    at_once_keys = _keys(at_once)
    at_once.sync(save=False)
    final_live = {(kind, item): (text, parts) for kind, item, text, parts in live_keys}  # a later round key replaces an earlier one
    final_at_once = {(kind, item): (text, parts) for kind, item, text, parts in at_once_keys}
    assert len(final_at_once) == 3 * len(speakers)
    assert final_live == final_at_once


def test_a_facts_only_catch_up_leaves_new_turns_to_the_next_full_one(settings, bare_store, make_retriever):
    """The agent's enrichment worker syncs with turns=False: it must not embed the turn being answered."""
    store = bare_store
    session_id = store.new_session("ann", "daily", started_at=T0)
    _say(store, session_id, 0)
    retriever = make_retriever(settings, store, cache_dir=None)
    _say(store, session_id, 1)
    fact = store.add_fact("ann", "user.friend", "The user hikes with Leo", [store.list_turns("ann", limit=1)[0].id], valid_from=T0)
    assert retriever.sync(save=False, turns=False) == 1
    assert retriever.indexed_turns("ann") == 1 and fact.id in retriever.facts_of_turns("ann", fact.source_turn_ids)[0]
    assert retriever.sync(save=False) == 1 and retriever.indexed_turns("ann") == 2
