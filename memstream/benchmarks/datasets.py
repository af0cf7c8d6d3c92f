"""LoCoMo questions as the retrieval evaluation reads them (the question text as asked, the category code,
the evidence dia_ids); the end-to-end runner's loader is `questions.py`. Malformed files raise DatasetError
naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memstream.benchmarks.questions import locomo_evidence_ids
from memstream.benchmarks.scoring import LOCOMO_CATEGORIES
from memstream.memory.importers import ImportFormatError, load_json, require_field


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
            evidence = item.get("evidence") or []
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
                    evidence=locomo_evidence_ids(evidence),
                    adversarial_answer=None if adversarial is None else str(adversarial),
                )
            )
    return questions


def load_locomo_questions(path: str | Path) -> list[LocomoQuestion]:
    return parse_locomo_questions(_load(path), source=str(path))
