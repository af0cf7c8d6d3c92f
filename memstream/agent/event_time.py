"""Event time: when the thing a turn talks about happened, not when the turn was said.

"I adopted her last May", said on 1 December 2026, is about May 2026. The enrichment worker (no model) resolves
such references ("last May", "two weeks ago", "yesterday", "on 12 June 2020") against the turn's own time and
stores one fact per reference, linked to the turn, whose metadata carries the event window:

    metadata = {"kind": "event_time", "event_start": ISO, "event_end": ISO (exclusive), "expression": "last May",
                "event_label": "May 2026"}

Time-aware search reads those windows (a question about May finds the turn said in December), and a "when"
question answered from a memory gives its event time before the day it was said.
Windows that contain the moment of speaking ("this year", "today") say nothing the turn's own time does not,
and future ones are plans, not events: neither is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from memstream.memory.model import Fact, Turn
from memstream.retrieval.event_windows import EVENT_KIND
from memstream.retrieval.timeparse import extract_time_window

MAX_EVENTS_PER_TURN = 4
_CLAUSE = re.compile(r"[^.!?;\n]+[.!?]?")


@dataclass(frozen=True)
class EventTime:
    start: datetime
    end: datetime
    """Exclusive."""
    expression: str
    clause: str
    """The sentence the reference sits in."""

    @property
    def label(self) -> str:
        return window_label(self.start, self.end)

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": EVENT_KIND,
            "event_start": self.start.isoformat(),
            "event_end": self.end.isoformat(),
            "expression": self.expression,
            "event_label": self.label,
        }


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def window_label(start: datetime, end: datetime) -> str:
    """How a person would say the window: a day, a month, a year, or the week around its middle."""
    span = end - start
    if span <= timedelta(days=1):
        return _day(start)
    if start.day == 1 and (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1 and end.day == 1:
        return f"{start:%B %Y}"
    if (start.month, start.day, end.month, end.day) == (1, 1, 1, 1) and end.year - start.year == 1:
        return str(start.year)
    middle = start + span / 2
    if span <= timedelta(days=10):
        return f"the week of {_day(middle)}"
    return f"around {middle:%B %Y}"


def find_event_times(text: str, said_at: datetime) -> list[EventTime]:
    """The past event windows the text refers to, one per clause at most, resolved against `said_at`."""
    found: list[EventTime] = []
    for match in _CLAUSE.finditer(text):
        clause = match.group(0).strip()
        if len(clause) < 4:
            continue
        window = extract_time_window(clause, said_at)
        if window is None or window.contains(said_at) or window.start > said_at:
            continue
        found.append(EventTime(window.start, window.end, window.expression, clause))
        if len(found) >= MAX_EVENTS_PER_TURN:
            break
    return found


def _owner(turn: Turn) -> tuple[str, str]:
    if turn.speaker and turn.speaker.lower() not in ("user", "assistant", "system"):
        return re.sub(r"\W+", "_", turn.speaker.strip().lower()), turn.speaker
    return ("user", "The user") if turn.role == "user" else ("assistant", "The assistant")


def event_facts(turn: Turn) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, text, metadata) of the event-time facts of one turn. Subjects are per turn and reference, so a
    later event never closes an earlier one as a knowledge update would."""
    owner, who = _owner(turn)
    out = []
    for number, event in enumerate(find_event_times(turn.text, turn.event_time)):
        pattern = re.compile(re.escape(event.expression), re.IGNORECASE)
        resolved = pattern.sub(lambda m: f"{m.group(0)} ({event.label})", event.clause, count=1)
        out.append((f"{owner}.event.t{turn.id}.{number}", f"{who}: {resolved}", event.metadata()))
    return out


def event_label(facts: Iterable[Fact], turn_id: int) -> str | None:
    """The event time of the first event-time fact drawn from this turn."""
    for fact in sorted(facts, key=lambda f: f.id):
        if turn_id in fact.source_turn_ids and (fact.metadata or {}).get("kind") == EVENT_KIND:
            label = fact.metadata.get("event_label")
            if isinstance(label, str) and label:
                return label
    return None


def event_date_answer(memory, user: str, turn: Turn) -> str | None:
    """A "when" answer from the turn's event-time fact, if it has one (the database is the truth)."""
    known, indexed_through = memory.retriever.facts_of_turns(user, {turn.id})
    facts = (memory.get_facts(user, ids=sorted(known)) if known else []) + memory.get_facts(user, after_id=indexed_through)
    return event_label(facts, turn.id)
