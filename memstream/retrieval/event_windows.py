"""Event windows of facts, for time-aware search: a turn said in December about "last May" is found by a
question about May. The windows come from event-time facts (agent/event_time.py writes them; their metadata
holds `event_start` / `event_end`); this index keeps them per user beside the turn times."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping, Sequence

from memstream.memory.model import Fact
from memstream.retrieval.timeparse import TimeWindow

EVENT_KIND = "event_time"


def fact_window(fact: Fact) -> TimeWindow | None:
    """The event window an event-time fact carries, or None for any other fact."""
    meta = fact.metadata or {}
    if meta.get("kind") != EVENT_KIND:
        return None
    try:
        start, end = datetime.fromisoformat(meta["event_start"]), datetime.fromisoformat(meta["event_end"])
    except (KeyError, TypeError, ValueError):
        return None  # written by something else: not an event window we can use
    return TimeWindow(start, end, str(meta.get("expression", ""))) if end > start else None


class EventWindows:
    """fact id -> (start, end) in epoch seconds, for one user."""

    def __init__(self) -> None:
        self._windows: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def note(self, fact_id: int, window: TimeWindow | None) -> None:
        if window is None:
            self._windows.pop(fact_id, None)
        else:
            self._windows[fact_id] = (int(window.start.timestamp()), int(window.end.timestamp()))

    def drop(self, fact_id: int) -> None:
        self._windows.pop(fact_id, None)

    def turns_in(self, window: TimeWindow, fact_turns: Mapping[int, Sequence[int]]) -> set[int]:
        """Turns whose event window overlaps `window`."""
        start, end = int(window.start.timestamp()), int(window.end.timestamp())
        out: set[int] = set()
        for fact_id, (a, b) in self._windows.items():
            if a < end and b > start:
                out.update(fact_turns.get(fact_id, ()))
        return out


def merge_turn_ids(base: "Iterable[int]", extra: set[int]) -> list[int]:
    return sorted(set(base) | extra)
