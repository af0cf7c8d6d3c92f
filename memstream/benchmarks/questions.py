"""Benchmark items for the runner: each history (one user namespace) and the questions asked of it.

Loading is per item and lenient: a malformed sample or question is reported in `problems`
(with a message naming the item and field) and skipped, and the rest still runs; the report
counts the problems. The histories themselves are parsed by `memstream.memory.importers`.

Question dates: LongMemEval gives `question_date`. LoCoMo has none, so every LoCoMo question is
asked one day after the conversation's last session (the first moment all of it is in the past).

LoCoMo question wording follows the authors' QA script: temporal questions (category 2) get
"Use DATE of CONVERSATION to answer with an approximate date.", and adversarial questions
(category 5) become a two-way choice between "Not mentioned in the conversation" and the
adversarial answer, in an order fixed by the question id.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from memstream.memory.importers import ImportFormatError, load_json, parse_locomo, parse_longmemeval, parse_longmemeval_time
from memstream.memory.model import NewSession
from memstream.benchmarks.scoring import LOCOMO_CATEGORIES

LONGMEMEVAL_TYPES = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "temporal-reasoning",
    "knowledge-update",
)
NOT_MENTIONED = "Not mentioned in the conversation"
TEMPORAL_HINT = "Use DATE of CONVERSATION to answer with an approximate date."
LOCOMO_ASK_DELAY = timedelta(days=1)


@dataclass
class BenchQuestion:
    qid: str
    namespace: str
    question: str
    """As put to every system (with the category hint or the adversarial choice)."""
    gold: str
    category: str
    """LoCoMo category name (multi-hop, temporal, ...) or LongMemEval question type."""
    asked_at: datetime
    code: int | None = None
    """LoCoMo category number (the scoring rule); None for LongMemEval."""
    evidence: list[str] = field(default_factory=list)
    """Source ids of the evidence turns: LoCoMo dia_ids, LongMemEval `session:index` of has_answer turns."""
    evidence_sessions: list[str] = field(default_factory=list)
    abstention: bool = False
    choices: dict[str, str] = field(default_factory=dict)
    """Adversarial choice letters -> option text, so a reply of '(a)' maps back to its option."""


@dataclass
class BenchData:
    benchmark: str
    histories: dict[str, list[NewSession]] = field(default_factory=dict)
    questions: list[BenchQuestion] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


read_json = load_json


def load_benchmark(benchmark: str, path: str | Path) -> BenchData:
    data = read_json(path)
    if not isinstance(data, list):
        data = [data]
    if benchmark == "locomo":
        return locomo_items(data, source=Path(path).name)
    if benchmark == "longmemeval":
        return longmemeval_items(data, source=Path(path).name)
    raise ValueError(f"unknown benchmark {benchmark!r} (locomo or longmemeval)")


def adversarial_question(qid: str, question: str, wrong: str) -> tuple[str, dict[str, str]]:
    if zlib.crc32(qid.encode()) % 2:
        options = {"a": NOT_MENTIONED, "b": wrong}
    else:
        options = {"a": wrong, "b": NOT_MENTIONED}
    return f"{question} Select the correct answer: (a) {options['a']} (b) {options['b']}.", options


def locomo_items(samples: list, source: str = "locomo") -> BenchData:
    out = BenchData("locomo")
    for index, sample in enumerate(samples):
        sample_id = str(sample.get("sample_id") or f"locomo-{index}") if isinstance(sample, dict) else f"locomo-{index}"
        try:
            sessions = parse_locomo([sample], source=source)
        except ImportFormatError as exc:
            message = str(exc) if sample_id in str(exc) else f"{source}: sample {sample_id}: {str(exc).split(': ', 2)[-1]}"
            out.problems.append(f"{message}; sample skipped")
            continue
        turns = sum(len(s.turns) for s in sessions)
        if turns == 0:
            out.problems.append(f"{source}: sample {sample_id}: the conversation is empty; its questions are skipped")
            continue
        namespace = f"locomo:{sample_id}"
        out.histories[namespace] = sessions
        last = max(s.started_at for s in sessions if s.started_at)
        qa = sample.get("qa")
        if not isinstance(qa, list):
            out.problems.append(f"{source}: sample {sample_id}: missing field 'qa'; no questions")
            continue
        for number, item in enumerate(qa):
            qid = f"{sample_id}:q{number}"
            try:
                out.questions.append(_locomo_question(item, qid, namespace, last + LOCOMO_ASK_DELAY))
            except ImportFormatError as exc:
                out.problems.append(f"{source}: question {qid}: {exc}; skipped")
    return out


def _locomo_question(item: Any, qid: str, namespace: str, asked_at: datetime) -> BenchQuestion:
    if not isinstance(item, dict):
        raise ImportFormatError("expected an object")
    for key in ("question", "category"):
        if key not in item:
            raise ImportFormatError(f"missing field {key!r}")
    code = item["category"]
    if code not in LOCOMO_CATEGORIES:
        raise ImportFormatError(f"unknown category {code!r} (expected 1-5)")
    question = str(item["question"])
    choices: dict[str, str] = {}
    if code == 5:
        gold = NOT_MENTIONED
        wrong = item.get("adversarial_answer", item.get("answer"))
        if wrong is None:
            raise ImportFormatError("missing field 'adversarial_answer'")
        question, choices = adversarial_question(qid, question, str(wrong))
    else:
        if "answer" not in item:
            raise ImportFormatError("missing field 'answer'")
        gold = str(item["answer"])
        if code == 2:
            question = f"{question} {TEMPORAL_HINT}"
    evidence = locomo_evidence_ids(item.get("evidence") or [])
    return BenchQuestion(
        qid=qid,
        namespace=namespace,
        question=question,
        gold=gold,
        category=LOCOMO_CATEGORIES[code],
        asked_at=asked_at,
        code=code,
        evidence=evidence,
        evidence_sessions=sorted({e.split(":")[0] for e in evidence}),
        abstention=code == 5,
        choices=choices,
    )


def locomo_evidence_ids(evidence: list) -> list[str]:
    """A LoCoMo question's evidence dia_ids; a few entries hold two ids in one string ("D8:6; D9:17")."""
    return [part.strip() for entry in evidence for part in str(entry).replace(",", ";").split(";") if part.strip()]


def longmemeval_items(questions: list, source: str = "longmemeval") -> BenchData:
    out = BenchData("longmemeval")
    for index, item in enumerate(questions):
        qid = str(item.get("question_id", f"#{index}")) if isinstance(item, dict) else f"#{index}"
        where = f"{source}: question {qid}"
        try:
            question = _longmemeval_question(item, where)
            sessions = parse_longmemeval([item], source=source)
        except ImportFormatError as exc:
            out.problems.append(f"{exc}; skipped" if str(exc).startswith(source) else f"{where}: {exc}; skipped")
            continue
        if sum(len(s.turns) for s in sessions) == 0:
            out.problems.append(f"{where}: the history is empty; skipped")
            continue
        out.histories[question.namespace] = sessions
        out.questions.append(question)
    return out


def _longmemeval_question(item: Any, where: str) -> BenchQuestion:
    if not isinstance(item, dict):
        raise ImportFormatError("expected an object")
    for key in ("question_id", "question_type", "question", "answer", "question_date", "haystack_sessions", "haystack_session_ids"):
        if key not in item:
            raise ImportFormatError(f"missing field {key!r}")
    kind = item["question_type"]
    if kind not in LONGMEMEVAL_TYPES:
        raise ImportFormatError(f"unknown question type {kind!r} (expected one of {', '.join(LONGMEMEVAL_TYPES)})")
    try:
        asked_at = parse_longmemeval_time(str(item["question_date"]))
    except ValueError as exc:
        raise ImportFormatError(f"field 'question_date': {exc}") from exc
    qid = str(item["question_id"])
    evidence = []
    for session_id, turns in zip(item["haystack_session_ids"], item["haystack_sessions"]):
        for position, turn in enumerate(turns if isinstance(turns, list) else []):
            if isinstance(turn, dict) and turn.get("has_answer"):
                evidence.append(f"{session_id}:{position}")
    return BenchQuestion(
        qid=qid,
        namespace=f"longmemeval:{qid}",
        question=str(item["question"]),
        gold=str(item["answer"]),
        category=kind,
        asked_at=asked_at,
        evidence=evidence,
        evidence_sessions=[str(s) for s in item.get("answer_session_ids") or []],
        abstention=qid.endswith("_abs"),
    )


def select(data: BenchData, limit: int | None = None, categories: set[str] | None = None, per_history: int | None = None) -> list[BenchQuestion]:
    """The questions to run: filtered by category (names or LoCoMo numbers); with `per_history`, at most
    that many per namespace, evenly spaced through its questions (so every category stays represented);
    then the first `limit`."""
    chosen = [q for q in data.questions if not categories or q.category in categories or str(q.code) in categories]
    if per_history is not None:
        groups: dict[str, list[BenchQuestion]] = {}
        for question in chosen:
            groups.setdefault(question.namespace, []).append(question)
        chosen = []
        for group in groups.values():
            step = max(1, len(group) / per_history)
            picks = sorted({int(i * step) for i in range(min(per_history, len(group)))})
            chosen.extend(group[i] for i in picks)
    return chosen[:limit] if limit is not None else chosen
