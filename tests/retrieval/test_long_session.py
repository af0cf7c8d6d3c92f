"""A live conversation is one session that only grows: catching the index up after a turn must read a
bounded number of rows, whatever the session's length, and give the same keys as indexing it all at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.memory.model import NewTurn
from memstream.retrieval.session_context import CONTEXT_LOOKBACK
from tests.store_reads import rows_read

T0 = datetime(2024, 1, 1, 9, 0)


def _say(store, session_id: int, i: int, speaker: str | None = None) -> list:
    role = "user" if i % 2 == 0 else "assistant"
    text = f"I went hiking with Leo, day {i}." if role == "user" else f"Noted, thanks for telling me about day {i}."
    return store.add_turns("ann", "daily", [NewTurn(role, text, speaker or role, T0 + timedelta(minutes=7 * i))], session_id=session_id)


def _record(owner, name: str, entries) -> list:
    """Wrap `owner.name` so that what `entries(*args, **options)` returns for each call is appended to the list returned."""
    recorded: list = []
    original = getattr(owner, name)

    def wrapper(*args, **options):
        recorded.extend(entries(*args, **options))
        return original(*args, **options)

    setattr(owner, name, wrapper)
    return recorded


def _keys(retriever) -> list[tuple]:
    """Every key text the retriever indexes from now on: (kind, item id, text, a pooled round's statement parts)."""
    return _record(retriever, "_add_jobs", lambda jobs, refresh, **options: [(j.kind, j.item_id, j.text, j.parts) for j in jobs])


def _session_reads(store) -> list[int]:
    """The session ids of the store's list_turns(session_id=...) calls from now on."""
    return _record(store, "list_turns", lambda *args, **options: [options["session_id"]] if options.get("session_id") is not None else [])


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


def test_the_next_turn_of_a_live_session_takes_its_neighbours_from_the_tail_not_the_store(settings, bare_store, make_retriever):
    """A write's own catch-up (sync with its fresh turns, as Memory.add does): the same keys as a retriever that reads
    the neighbours back every time (its tails emptied before each turn)."""
    store = bare_store
    session_id = store.new_session("ann", "daily", started_at=T0)
    live = make_retriever(settings, store, cache_dir=None)
    reading = make_retriever(settings, store, cache_dir=None)
    live_keys, reading_keys = _keys(live), _keys(reading)
    reads = _session_reads(store)
    for i in range(12):
        fresh = _say(store, session_id, i)
        live.sync(save=False, fresh=fresh)
        assert reads == []  # every earlier neighbour is one this retriever's live writes just indexed
        reads.clear()
        for index in reading._users.values():
            index.session_tails.clear()
        reading.sync(save=False, fresh=fresh)
        assert reads == ([session_id] if i else [])  # a turn after the first reads its neighbours back
        reads.clear()
    assert len(live_keys) > 3 * 12 and live_keys == reading_keys
    # A catch-up over stored turns (another writer's, an import) keeps no tails: they would copy every user's last turns.
    catching_up = make_retriever(settings, store, cache_dir=None)
    assert catching_up.indexed_turns("ann") == 12 and all(not index.session_tails for index in catching_up._users.values())


def test_a_deleted_turn_never_comes_back_from_a_session_tail_into_a_refreshed_key(settings, bare_store, make_retriever):
    store = bare_store
    session_id = store.new_session("ann", "daily", started_at=T0)
    retriever = make_retriever(settings, store, cache_dir=None)
    for i in range(6):
        retriever.sync(save=False, fresh=_say(store, session_id, i))
    turns = store.list_turns("ann")
    assert retriever._users["ann"].session_tails  # the live writes kept the session's tail
    assert store.delete_turn("ann", turns[4].id)
    retriever.sync(save=False)
    recorded = _keys(retriever)
    retriever.sync(save=False, fresh=_say(store, session_id, 6))
    assert recorded and all("day 4" not in text and all("day 4" not in part for _, part in parts) for _, _, text, parts in recorded)
    assert any(kind == "round" and item == turns[5].id for kind, item, _, _ in recorded)  # turn 5's round was refreshed


def test_a_session_tail_answers_only_for_the_very_next_positions():
    from memstream.memory.model import Turn
    from memstream.retrieval.lexical import Tokenizer
    from memstream.retrieval.user_index import UserIndex

    def turn(position: int) -> Turn:
        return Turn(id=100 + position, user_id="ann", conversation_id="daily", session_id=7, role="user", speaker=None,
                    text=f"turn {position}", event_time=T0, ingested_at=T0, position=position, embedding=b"x" * 8)

    index = UserIndex("ann", 8, 1000, Tokenizer())
    index.remember_tail(7, [turn(p) for p in range(0, 5)], keep=3)
    assert [t.position for t in index.session_tails[7]] == [2, 3, 4] and index.session_tails[7][0].embedding is None
    assert [t.position for t in index.tail_before(7, [turn(5), turn(6)], 3)] == [2, 3, 4]
    assert [t.position for t in index.tail_before(7, [turn(5)], 2)] == [3, 4]
    assert index.tail_before(7, [turn(6)], 3) is None  # a turn in between, from another writer
    assert index.tail_before(7, [turn(5), turn(7)], 3) is None  # the fresh turns themselves have a gap
    assert index.tail_before(7, [turn(5)], 4) is None  # fewer than asked, and not from the session's start
    assert index.tail_before(8, [turn(5)], 3) is None
    index.remember_tail(9, [turn(0), turn(1)], keep=3)
    assert [t.position for t in index.tail_before(9, [turn(2)], 5)] == [0, 1]  # a short session, from its start
    index.remember_tail(7, [turn(3), turn(5), turn(6)], keep=3)  # a position missing: nothing kept
    assert 7 not in index.session_tails
    index.drop_turn(101)
    assert index.session_tails == {}
