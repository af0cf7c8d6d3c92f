"""The earlier turns of a session that a new turn's keys need: its round's neighbours and its statement's other
speaker. A live conversation is one session that only grows, so they are read (or taken from what the index just
indexed) by position near the new turn, never by reading the whole session."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol, Sequence

from memstream.memory.model import Turn
from memstream.retrieval import keys as keymod
from memstream.retrieval.user_index import UserIndex

MONOLOGUE_LOOKBACK = 256  # turns searched back for the other speaker of a monologue's statement key
CONTEXT_LOOKBACK = 8  # turns read before new ones, beyond their rounds' neighbours


def context_lookback(round_neighbours: int) -> int:
    """Turns before new ones that their keys may need: both sides' round neighbours, and CONTEXT_LOOKBACK more for
    the statement's other speaker (both indexes read this many)."""
    return 2 * round_neighbours + CONTEXT_LOOKBACK


class TurnReader(Protocol):
    def list_turns(self, user_id: str, **filters) -> list[Turn]: ...


def session_context(store: TurnReader, index: UserIndex | None, user_id: str, session_id: int, fresh: list[Turn],
                    lookback: int) -> list[Turn]:
    """The session's turns the keys of `fresh` (sorted by id) and the refreshed rounds before them depend on:
    every turn from the first fresh one on, and the `lookback` before it. The whole session from its start when it
    has fewer; further back (MONOLOGUE_LOOKBACK) when a fresh turn's nearest other speaker lies beyond them."""
    by_id = {t.id: t for t in fresh}
    # No read in the live case when this process indexed the turns just before (the session's tail, kept by position:
    # with a turn in between, from another writer, the positions do not meet).
    cached = index.tail_before(session_id, fresh, lookback) if index is not None else None
    before, since = (cached[::-1], list(fresh)) if cached is not None else read_context(store, user_id, session_id, fresh, lookback)
    context = [by_id.get(t.id, t) for t in reversed(before)] + [by_id.get(t.id, t) for t in since]
    if len(before) < lookback:
        return context  # the session from its start
    positions = {t.id: i for i, t in enumerate(context)}
    for turn in fresh:
        i = positions.get(turn.id)
        distance = keymod.other_speaker_distance(context, i) if i is not None else None
        if distance is None or distance > i:
            # A monologue: look further back for the other speaker, but never read the whole session per turn
            # (a note-taking user's one session can hold thousands of turns).
            older = store.list_turns(user_id, session_id=session_id, before_id=fresh[0].id, limit=MONOLOGUE_LOOKBACK, newest_first=True)
            return [by_id.get(t.id, t) for t in reversed(older)] + context[len(before):]
    return context


def read_context(store: TurnReader, user_id: str, session_id: int, fresh: Sequence[Turn], lookback: int) -> tuple[list[Turn], list[Turn]]:
    """(up to `lookback` turns before `fresh`, newest first; the turns from the first fresh one on, in order) as the
    store has them: one read when the fresh turns are the session's newest with nothing interleaved, else two."""
    newest = store.list_turns(user_id, session_id=session_id, before_id=fresh[-1].id + 1, limit=lookback + len(fresh), newest_first=True)
    split = next((n for n, t in enumerate(newest) if t.id < fresh[0].id), len(newest))
    if split == len(fresh) and {t.id for t in newest[:split]} == {t.id for t in fresh}:
        return newest[split:], list(reversed(newest[:split]))
    before = store.list_turns(user_id, session_id=session_id, before_id=fresh[0].id, limit=lookback, newest_first=True)
    return before, store.list_turns(user_id, session_id=session_id, after_id=fresh[0].id - 1)


def by_session(turns: Sequence[Turn]) -> dict[tuple[str, Any], list[Turn]]:
    """Turns grouped by (user, session id), or by conversation for a turn without a session."""
    grouped: dict[tuple[str, Any], list[Turn]] = defaultdict(list)
    for turn in turns:
        grouped[(turn.user_id, turn.session_id if turn.session_id is not None else f"c:{turn.conversation_id}")].append(turn)
    return grouped
