"""Compose the prompt: flash turns, quoted evidence with resolved dates, and the user's message.

Small models never resolve "yesterday" against a record's date themselves, so the evidence
carries the absolute date next to each relative expression: "yesterday [7 May 2023]".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Sequence

from memstream.agent import prompts
from memstream.backends.base import Message
from memstream.memory.model import Turn

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "couple of": 2, "few": 3}
RELATIVE = re.compile(
    r"\b(yesterday|today|tonight|this morning|last night|tomorrow|"
    r"last (?:week|weekend|month|year|" + "|".join(WEEKDAYS) + r")|"
    r"this (?:week|weekend|month|year)|next (?:week|weekend|month|year)|"
    r"(?:\d+|a couple of|a few|couple of|few|a|an|one|two|three|four|five|six|seven|eight|nine|ten) (?:day|week|month|year)s? ago)\b",
    re.IGNORECASE,
)


def day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def _month_shift(moment: datetime, months: int) -> datetime:
    month_index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=month_index // 12, month=month_index % 12 + 1, day=1)


def resolve_relative(expression: str, said_at: datetime) -> str | None:
    """The absolute date or period a relative expression meant when said at `said_at`."""
    phrase = expression.lower()
    if phrase in ("today", "tonight", "this morning"):
        return day(said_at)
    if phrase in ("yesterday", "last night"):
        return day(said_at - timedelta(days=1))
    if phrase == "tomorrow":
        return day(said_at + timedelta(days=1))
    if phrase in ("last week", "last weekend"):
        return f"the week before {day(said_at)}"
    if phrase in ("this week", "this weekend"):
        return f"the week of {day(said_at)}"
    if phrase in ("next week", "next weekend"):
        return f"the week after {day(said_at)}"
    if phrase == "last month":
        return f"{_month_shift(said_at, -1):%B %Y}"
    if phrase == "this month":
        return f"{said_at:%B %Y}"
    if phrase == "next month":
        return f"{_month_shift(said_at, 1):%B %Y}"
    if phrase == "last year":
        return str(said_at.year - 1)
    if phrase == "this year":
        return str(said_at.year)
    if phrase == "next year":
        return str(said_at.year + 1)
    if phrase.startswith("last "):
        weekday = WEEKDAYS.index(phrase[5:])
        delta = (said_at.weekday() - weekday) % 7 or 7
        return day(said_at - timedelta(days=delta))
    match = re.match(r"(.+) (day|week|month|year)s? ago", phrase)
    if match:
        count_text, unit = match.groups()
        count = int(count_text) if count_text.isdigit() else NUMBER_WORDS.get(count_text, 1)
        if unit == "day":
            return day(said_at - timedelta(days=count))
        if unit == "week":
            return f"the week of {day(said_at - timedelta(weeks=count))}"
        if unit == "month":
            return f"{_month_shift(said_at, -count):%B %Y}"
        return str(said_at.year - count)
    return None


def date_answer(turn: Turn, event_label: str | None = None) -> str:
    """The date a memory points at: its first relative expression resolved against when it was said
    ("last week", said 9 June 2023 -> "the week before 9 June 2023"), else the event time stored for it
    ("last May", "on 12 June 2020": agent/event_time.py), else the day it was said."""
    match = RELATIVE.search(turn.text)
    resolved = resolve_relative(match.group(0), turn.event_time) if match else None
    return resolved or event_label or day(turn.event_time)


def annotate_relative_dates(text: str, said_at: datetime) -> str:
    def replace(match: re.Match) -> str:
        resolved = resolve_relative(match.group(0), said_at)
        return f"{match.group(0)} [{resolved}]" if resolved else match.group(0)

    return RELATIVE.sub(replace, text)


def quote(text: str) -> str:
    """Keep a record from closing the memory block early or posing as a system line."""
    return text.replace(prompts.MEMORY_CLOSE, "MEMORY>").replace(prompts.MEMORY_OPEN, "<MEMORY").replace("\n", " ")


def evidence_line(turn: Turn, max_chars: int = 600) -> str:
    text = annotate_relative_dates(turn.text, turn.event_time)
    if len(text) > max_chars:
        text = text[:max_chars] + "..."
    who = quote(turn.speaker or turn.role)  # speakers come from imported files too: quote them like the text
    if turn.role == "assistant":
        who = f"{who} (assistant reply)" if who.lower() != "assistant" else "assistant (earlier reply)"  # provenance, marked
    return f"[{day(turn.event_time)}] {who}: {quote(text)}"


def evidence_lines(turns: Sequence[Turn]) -> list[str]:
    """Evidence in time order (conversation order within a time), one line per turn."""
    ordered = sorted(turns, key=lambda t: (t.event_time, t.session_id or 0, t.position, t.id))
    return [evidence_line(t) for t in ordered]


def memory_block(lines: Sequence[str]) -> str:
    body = "\n".join(lines) if lines else prompts.NO_MEMORY
    return f"{prompts.MEMORY_HEADER}\n{prompts.MEMORY_OPEN}\n{body}\n{prompts.MEMORY_CLOSE}"


def chunk_lines(lines: Sequence[str], budget: int, count_tokens: Callable[[str], int]) -> list[list[str]]:
    """Split evidence lines into chunks that each fit `budget` tokens (a single long line gets its own chunk)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for line in lines:
        cost = count_tokens(line) + 1
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(line)
        used += cost
    if current:
        chunks.append(current)
    return chunks


@dataclass
class Truncated:
    text: str
    note: str | None


def truncate_for_model(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> Truncated:
    """A message longer than the model can take is cut, with a visible note; the stored turn keeps it whole."""
    if count_tokens(text) <= max_tokens:
        return Truncated(text, None)
    keep = max(1, min(len(text), max_tokens * 4))
    while keep > 1 and count_tokens(text[:keep]) > max_tokens:
        keep = int(keep * 0.8)
    note = prompts.TRUNCATED_NOTE.format(chars=len(text), kept=keep)
    return Truncated(text[:keep] + "\n" + note, note)


def build_messages(
    system: str,
    flash: Sequence[Turn],
    evidence: str | None,
    message: str,
    short_answer: bool = False,
) -> list[Message]:
    """One prompt: system + memory block, the flash turns as chat history, then the message."""
    system_text = system if evidence is None else f"{system}\n\n{evidence}"
    messages: list[Message] = [{"role": "system", "content": system_text}]
    for turn in flash:
        role = "assistant" if turn.role == "assistant" else "user"
        content = turn.text if turn.speaker in (None, turn.role) else f"{turn.speaker}: {turn.text}"
        messages.append({"role": role, "content": content})
    final = f"{message}\n{prompts.SHORT_ANSWER}" if short_answer else message
    messages.append({"role": "user", "content": final})
    return messages
