"""Retrieval keys: the texts indexed for each turn, and the no-LLM fact extractor.

A key is an indexed text that points back to turns (LongMemEval's key expansion):
- `turn`: the turn itself, with its speaker's name;
- `round`: the turn with its neighbours in the session and the session's date
  (session decomposition: a LoCoMo turn alone often lacks the context its question needs). Its vector, by default
  (retrieval.round_vectors "statements"), is pooled from the statement vectors of the same turns instead of a model
  pass over its own text: no model cost, and better recall (reports/round_vectors.md);
- `statement`: a no-LLM fact key: the turn rewritten as a third-person statement
  ("I went there yesterday" -> "Caroline went there on 7 May 2023"): pronouns resolved
  to speakers, relative dates resolved against the session date, named entities listed;
- `fact`: a fact from the store's facts table (written by the LLM fact extractor).

Every key is in the keyword (BM25) index; the kinds in `retrieval.dense_kinds` (by default all) also get a vector.
With encoded round vectors, round and statement keys were four fifths of the tokens a write embeds
(reports/dense_kinds_float.md); pooled round vectors need none of their own.

Key ids pack the item id and the kind in one int64 (FAISS and BM25 ids): item_id * 8 + kind.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Callable, Sequence

import numpy as np

from memstream.memory.model import Fact, Turn

KINDS = ("turn", "round", "statement", "fact")
KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
_SHIFT = 8


def key_id(item_id: int, kind: str) -> int:
    return int(item_id) * _SHIFT + KIND_CODE[kind]


def split_key(key: int) -> tuple[int, str]:
    return int(key) // _SHIFT, KINDS[int(key) % _SHIFT]


def item_ids(keys: np.ndarray) -> np.ndarray:
    """The turn (or fact) id of each key, at once."""
    return keys // _SHIFT


def human_date(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def _who(turn: Turn) -> str:
    return turn.speaker or turn.role


def turn_key_text(turn: Turn) -> str:
    return f"{_who(turn)}: {turn.text}"


def round_window(count: int, index: int, neighbours: int) -> range:
    """Positions of the turns a round key joins: the turn at `index` of a session of `count` and its neighbours."""
    return range(max(0, index - neighbours), min(count, index + neighbours + 1))


def round_key_text(turns: Sequence[Turn], index: int, neighbours: int) -> str:
    """The turn at `index` with `neighbours` turns on each side, under the session's date."""
    lines = [f"{_who(turns[j])}: {turns[j].text}" for j in round_window(len(turns), index, neighbours)]
    return f"[{human_date(turns[index].event_time)}] " + "\n".join(lines)


def statement_texts(turns: Sequence[Turn]) -> Callable[[int], str]:
    """The statement key text of the turn at each position of a session's `turns`, each made once: a turn's statement
    is also a part of up to three pooled rounds, and the rewrite is a few hundred microseconds of regular expressions."""

    @functools.cache
    def at(i: int) -> str:
        return statement_key_text(turns[i], other_speaker(turns, i))

    return at


def round_parts(turns: Sequence[Turn], index: int, neighbours: int, statement: Callable[[int], str]) -> tuple[tuple[int, str], ...]:
    """The statement keys (key id, text) whose vectors a pooled round vector sums: those of the round's turns.
    `statement`: statement_texts(turns), shared by the caller's keys of the same session."""
    return tuple((key_id(turns[j].id, "statement"), statement(j)) for j in round_window(len(turns), index, neighbours))


ROUND_VECTORS = ("statements", "encoded")


def check_round_vectors(round_vectors: str, dense_kinds: Sequence[str]) -> bool:
    """Whether round vectors are pooled (retrieval.round_vectors); ValueError for a setting that cannot work."""
    if round_vectors not in ROUND_VECTORS:
        raise ValueError(f"retrieval.round_vectors must be one of {', '.join(ROUND_VECTORS)}, got {round_vectors!r}")
    pooled = round_vectors == "statements" and "round" in dense_kinds
    if pooled and "statement" not in dense_kinds:
        raise ValueError("retrieval.round_vectors 'statements' pools statement vectors, but retrieval.dense_kinds has 'round' "
                         "without 'statement': add 'statement' to dense_kinds or set round_vectors to 'encoded'")
    return pooled


def pool(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """A pooled key's vector: the normalised sum of its parts' unit vectors (the mean direction)."""
    total = np.sum(np.asarray(vectors, dtype=np.float32), axis=0)
    norm = float(np.linalg.norm(total))
    return (total / norm if norm > 0 else total).astype(np.float32)


# -- the no-LLM statement extractor -------------------------------------------------------

_FIRST = [
    (r"\bI'm\b", "{me} is"),
    (r"\bI am\b", "{me} is"),
    (r"\bI've\b", "{me} has"),
    (r"\bI'd\b", "{me} would"),
    (r"\bI'll\b", "{me} will"),
    (r"\bI was\b", "{me} was"),
    (r"\bI\b", "{me}"),
    (r"\b[Mm]yself\b", "{me}"),
    (r"\b[Mm]y\b", "{me}'s"),
    (r"\b[Mm]ine\b", "{me}'s"),
    (r"\b[Mm]e\b", "{me}"),
]
_SECOND = [
    (r"\b[Yy]ou're\b", "{you} is"),
    (r"\b[Yy]ou've\b", "{you} has"),
    (r"\b[Yy]our\b", "{you}'s"),
    (r"\b[Yy]ourself\b", "{you}"),
    (r"\b[Yy]ou\b", "{you}"),
]
_RELATIVE_DAYS = {
    "yesterday": -1,
    "today": 0,
    "tonight": 0,
    "this morning": 0,
    "tomorrow": 1,
    "last night": -1,
}
_NUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "a": 1, "a couple of": 2, "a few": 3}
_AGO = re.compile(r"\b(\d+|one|two|three|four|five|six|a couple of|a few|a)\s+(day|week|month|year)s?\s+ago\b", re.I)
_LAST = re.compile(r"\b(last|next)\s+(week|weekend|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I)
_ENTITY = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)\b")


def _resolve_dates(text: str, when: datetime) -> str:
    """Append the absolute date after relative expressions: "yesterday" -> "yesterday (7 May 2023)"."""

    def days(match: re.Match, offset: int) -> str:
        return f"{match.group(0)} ({human_date(when + timedelta(days=offset))})"

    for phrase, offset in _RELATIVE_DAYS.items():
        text = re.sub(rf"\b{phrase}\b", lambda m, o=offset: days(m, o), text, flags=re.I)

    def ago(match: re.Match) -> str:
        amount = int(match.group(1)) if match.group(1).isdigit() else _NUM[match.group(1).lower()]
        unit = match.group(2).lower()
        delta = {"day": timedelta(days=amount), "week": timedelta(weeks=amount), "month": timedelta(days=30 * amount), "year": timedelta(days=365 * amount)}[unit]
        moment = when - delta
        label = human_date(moment) if unit in ("day", "week") else (f"{moment:%B %Y}" if unit == "month" else f"{moment.year}")
        return f"{match.group(0)} ({label})"

    text = _AGO.sub(ago, text)

    def last(match: re.Match) -> str:
        sign = -1 if match.group(1).lower() == "last" else 1
        unit = match.group(2).lower()
        if unit == "year":
            return f"{match.group(0)} ({when.year + sign})"
        if unit == "month":
            index = when.year * 12 + when.month - 1 + sign
            return f"{match.group(0)} ({datetime(index // 12, index % 12 + 1, 1):%B %Y})"
        return f"{match.group(0)} (week of {human_date(when + timedelta(weeks=sign))})"

    return _LAST.sub(last, text)


def statement_key_text(turn: Turn, other: str | None) -> str:
    """The turn as a third-person statement about its speaker, dated, with its named entities."""
    me = _who(turn)
    text = turn.text
    for pattern, replacement in _FIRST:
        text = re.sub(pattern, replacement.format(me=me), text)
    if other:
        for pattern, replacement in _SECOND:
            text = re.sub(pattern, replacement.format(you=other), text)
    text = _resolve_dates(text, turn.event_time)
    entities = sorted({e for e in _ENTITY.findall(turn.text) if e not in ("I", me)})
    tail = f" Mentions: {', '.join(entities)}." if entities else ""
    return f"On {human_date(turn.event_time)}, {me} said: {text}{tail}"


def other_speaker(turns: Sequence[Turn], index: int) -> str | None:
    """The nearest neighbour in the session spoken by someone else (who "you" refers to)."""
    j = _other_speaker_index(turns, index)
    return None if j is None else _who(turns[j])


def other_speaker_distance(turns: Sequence[Turn], index: int) -> int | None:
    """How far `other_speaker` looks: the distance of the neighbour it names, None if none. A slice of a
    session that starts `distance` or more turns before `index` gives the same answer as the whole."""
    j = _other_speaker_index(turns, index)
    return None if j is None else abs(j - index)


def _other_speaker_index(turns: Sequence[Turn], index: int) -> int | None:
    me = _who(turns[index])
    for distance in range(1, len(turns)):
        for j in (index - distance, index + distance):  # the earlier side first
            if 0 <= j < len(turns) and _who(turns[j]) != me:
                return j
    return None


def fact_key_text(fact: Fact) -> str:
    return f"{fact.text} ({human_date(fact.valid_from)})"
