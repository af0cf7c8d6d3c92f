"""Haystacks for development: LongMemEval-style questions whose evidence sessions are buried among
distractor sessions (from LoCoMo) up to a chosen history length, written in the official
LongMemEval schema so the runner loads them like the real thing.

The evidence sessions keep their own dates; distractors get dates spread over the days before the
question, and the haystack is ordered by date, as LongMemEval's are. Deterministic for a seed.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, Callable, Sequence

from memstream.memory.importers import locomo_session_numbers, parse_longmemeval_time

DISTRACTOR_SPAN = timedelta(days=365)  # distractor sessions fall in the year before the question


def words(text: str) -> int:
    return len(text.split())


def session_tokens(session: Sequence[dict], count: Callable[[str], int] = words) -> int:
    return sum(count(turn.get("content", "")) for turn in session)


def locomo_distractors(samples: Sequence[dict]) -> list[list[dict]]:
    """Every LoCoMo session as a LongMemEval session: the first speaker is the user."""
    sessions = []
    for sample in samples:
        conversation = sample.get("conversation") or {}
        speaker_a = conversation.get("speaker_a")
        for number in locomo_session_numbers(conversation):
            turns = [
                {"role": "user" if turn.get("speaker") == speaker_a else "assistant", "content": str(turn.get("text", ""))}
                for turn in conversation.get(f"session_{number}") or []
                if isinstance(turn, dict)
            ]
            if turns:
                sessions.append(turns)
    return sessions


def _format_date(moment) -> str:
    return f"{moment:%Y/%m/%d} ({moment:%a}) {moment:%H:%M}"


def bury(question: dict, distractors: Sequence[list[dict]], history_tokens: int, seed: int = 0, count: Callable[[str], int] = words) -> dict[str, Any]:
    """One question with its evidence sessions plus distractors until the history holds `history_tokens`."""
    if not distractors:
        raise ValueError("no distractor sessions to bury the evidence in")
    rng = random.Random(f"{seed}:{question['question_id']}")
    evidence_ids = set(question.get("answer_session_ids") or [])
    kept = [
        (parse_longmemeval_time(str(date)), str(sid), session)
        for sid, date, session in zip(question["haystack_session_ids"], question["haystack_dates"], question["haystack_sessions"])
        if sid in evidence_ids
    ]
    asked = parse_longmemeval_time(str(question["question_date"]))
    total = sum(session_tokens(s, count) for _, _, s in kept)
    order = list(range(len(distractors)))
    rng.shuffle(order)
    picked = 0
    while total < history_tokens:
        session = distractors[order[picked % len(order)]]
        when = asked - timedelta(seconds=rng.uniform(3600, DISTRACTOR_SPAN.total_seconds()))
        kept.append((when, f"distractor_{picked}", [dict(turn) for turn in session]))
        total += session_tokens(session, count)
        picked += 1
    kept.sort(key=lambda item: item[0])
    item = dict(question)
    item["haystack_dates"] = [_format_date(when) for when, _, _ in kept]
    item["haystack_session_ids"] = [sid for _, sid, _ in kept]
    item["haystack_sessions"] = [session for _, _, session in kept]
    return item


def build_haystacks(questions: Sequence[dict], distractor_samples: Sequence[dict], history_tokens: int, seed: int = 0) -> list[dict[str, Any]]:
    """LongMemEval items at the chosen history length (in words), evidence buried among LoCoMo sessions."""
    if history_tokens < 1:
        raise ValueError(f"history length must be >= 1 token, got {history_tokens}")
    distractors = locomo_distractors(distractor_samples)
    return [bury(question, distractors, history_tokens, seed) for question in questions]
