"""Benchmark question loaders (LoCoMo, LongMemEval). Malformed files raise DatasetError naming the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from memstream.memory.importers import ImportFormatError, load_json, parse_longmemeval_time, require_field

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
LONGMEMEVAL_TYPES = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "temporal-reasoning",
    "knowledge-update",
)


class DatasetError(ImportFormatError):
    """A benchmark file is malformed; the message names the file, the item and the field."""


@dataclass
class LocomoQuestion:
    sample_id: str
    index: int
    """Position within the sample's `qa` list."""
    question: str
    answer: str | None
    category: int
    evidence: list[str]
    """dia_ids of the evidence turns ("D3:7")."""
    adversarial_answer: str | None = None

    @property
    def question_id(self) -> str:
        return f"{self.sample_id}:{self.index}"

    @property
    def is_adversarial(self) -> bool:
        return self.category == 5

    @property
    def category_name(self) -> str:
        return LOCOMO_CATEGORIES.get(self.category, str(self.category))


@dataclass
class LongMemEvalQuestion:
    question_id: str
    question_type: str
    question: str
    answer: str
    question_date: datetime
    answer_session_ids: list[str]
    evidence_turns: list[str] = field(default_factory=list)
    """Source ids ("session_id:position") of turns marked has_answer."""

    @property
    def is_abstention(self) -> bool:
        return self.question_id.endswith("_abs")


_load = load_json
_field = require_field


def parse_locomo_questions(data: Any, source: str = "locomo") -> list[LocomoQuestion]:
    samples = data if isinstance(data, list) else [data]
    questions = []
    for number, sample in enumerate(samples):
        where = f"{source}: sample {number}"
        sample_id = str(sample.get("sample_id") or f"locomo-{number}") if isinstance(sample, dict) else None
        qa = _field(sample, "qa", where, list)
        for index, item in enumerate(qa):
            item_where = f"{source}: sample {sample_id}, qa[{index}]"
            question = _field(item, "question", item_where, str)
            category = _field(item, "category", item_where, int)
            if category not in LOCOMO_CATEGORIES:
                raise DatasetError(f"{item_where}: field 'category' is {category}, expected 1-5")
            evidence = item.get("evidence", [])
            if not isinstance(evidence, list):
                raise DatasetError(f"{item_where}: field 'evidence' is not a list of dia_ids")
            if category == 5:
                answer = item.get("answer")
                adversarial = item.get("adversarial_answer")
                if answer is None and adversarial is None:
                    raise DatasetError(f"{item_where}: missing field 'adversarial_answer'")
            else:
                answer = _field(item, "answer", item_where, (str, int, float))
                adversarial = None
            questions.append(
                LocomoQuestion(
                    sample_id=sample_id,
                    index=index,
                    question=question,
                    answer=None if answer is None else str(answer),
                    category=category,
                    # Some dia_ids in LoCoMo hold two ids in one string ("D8:6; D9:17"); split them.
                    evidence=[part.strip() for e in evidence for part in str(e).replace(",", ";").split(";") if part.strip()],
                    adversarial_answer=None if adversarial is None else str(adversarial),
                )
            )
    return questions


def load_locomo_questions(path: str | Path) -> list[LocomoQuestion]:
    return parse_locomo_questions(_load(path), source=str(path))


def parse_longmemeval_questions(data: Any, source: str = "longmemeval") -> list[LongMemEvalQuestion]:
    items = data if isinstance(data, list) else [data]
    questions = []
    for number, item in enumerate(items):
        where = f"{source}: question {number}"
        question_id = str(_field(item, "question_id", where, (str, int)))
        where = f"{source}: question {question_id}"
        question_type = _field(item, "question_type", where, str)
        if question_type not in LONGMEMEVAL_TYPES:
            raise DatasetError(f"{where}: unknown question_type {question_type!r}")
        date_text = _field(item, "question_date", where, str)
        try:
            question_date = parse_longmemeval_time(date_text)
        except ValueError as exc:
            raise DatasetError(f"{where}: field 'question_date': {exc}") from exc
        sessions = _field(item, "haystack_sessions", where, list)
        session_ids = _field(item, "haystack_session_ids", where, list)
        evidence = [
            f"{sid}:{pos}"
            for sid, turns in zip(session_ids, sessions)
            for pos, turn in enumerate(turns if isinstance(turns, list) else [])
            if isinstance(turn, dict) and turn.get("has_answer")
        ]
        questions.append(
            LongMemEvalQuestion(
                question_id=question_id,
                question_type=question_type,
                question=_field(item, "question", where, str),
                answer=str(_field(item, "answer", where, (str, int, float))),
                question_date=question_date,
                answer_session_ids=[str(s) for s in _field(item, "answer_session_ids", where, list)],
                evidence_turns=evidence,
            )
        )
    return questions


def load_longmemeval_questions(path: str | Path) -> list[LongMemEvalQuestion]:
    return parse_longmemeval_questions(_load(path), source=str(path))
