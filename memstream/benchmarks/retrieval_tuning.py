"""Leave-one-conversation-out for retrieval settings: evidence recall_any@10 per LoCoMo question for each
candidate setting, then the setting is chosen on four conversations and scored on the fifth.

Candidates are retriever attributes (RRF constant, time-list weight, ...) set on one live retriever between
passes, so the index is built once. Questions are the non-adversarial ones with evidence, asked as in
`retrieval_eval` (the question text, the day after the conversation's last session).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

from memstream.benchmarks.datasets import load_locomo_questions
from memstream.benchmarks.metrics import recall_any
from memstream.benchmarks.retrieval_eval import locomo_user, select_questions
from memstream.benchmarks.tuning import leave_one_group_out, pick_best

K = 10


@dataclass(frozen=True)
class RetrievalParams:
    rrf_k: int = 30
    time_weight: float = 1.0

    def describe(self) -> dict[str, Any]:
        return {"rrf_k": self.rrf_k, "time_weight": self.time_weight}


CANDIDATES = [
    RetrievalParams(60, 1.0), RetrievalParams(30, 1.0), RetrievalParams(120, 1.0), RetrievalParams(60, 0.5), RetrievalParams(60, 2.0),
    RetrievalParams(20, 1.0), RetrievalParams(40, 1.0), RetrievalParams(30, 0.5), RetrievalParams(30, 2.0),
    RetrievalParams(15, 1.0), RetrievalParams(10, 1.0),
]
"""The earlier default (60) first, so ties keep it; the first five are the grid 30 was chosen from; then the
neighbours of 30, and smaller constants (20 won the widened grid, at its edge)."""
FIRST_GRID = CANDIDATES[:5]


def recall_rows(retriever, data_path: Path, asked_at: dict[str, datetime], candidates: Sequence[RetrievalParams] = CANDIDATES) -> list[dict[str, Any]]:
    """One row per question: its conversation and recall_any@10 under each candidate."""
    questions = select_questions(load_locomo_questions(data_path))
    saved = (retriever.rrf_k, retriever.time_weight)
    rows = [{"qid": q.question_id, "conversation": q.sample_id, "category": q.category, "recall": {}} for q in questions]
    try:
        for params in candidates:
            retriever.rrf_k, retriever.time_weight = params.rrf_k, params.time_weight
            for row, question in zip(rows, questions):
                result = retriever.search(locomo_user(question.sample_id), question.question, k=K, now=asked_at[question.sample_id], mode="memstream")
                retrieved = [h.source_id or str(h.turn.id) for h in result.hits]
                row["recall"][params] = recall_any(retrieved, set(question.evidence), K)
    finally:
        retriever.rrf_k, retriever.time_weight = saved
    return rows


def tune_retrieval(rows: list[dict[str, Any]], candidates: Sequence[RetrievalParams] = CANDIDATES) -> dict[str, Any]:
    def fit(train):
        return pick_best(list(candidates), lambda p: (sum(r["recall"][p] for r in train) / len(train),))

    def score(pairs):
        return {"n": len(pairs), "recall_any@10": round(sum(r["recall"][p] for r, p in pairs) / len(pairs), 4)}

    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row["conversation"], []).append(row)
    result = leave_one_group_out(groups, fit, score)
    fixed = {str(p.describe()): score([(r, p) for r in rows])["recall_any@10"] for p in candidates}
    return {"loco": result.to_dict(lambda p: p.describe()), "each_candidate_in_sample": fixed}


def save_recall_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Per-question recall under each candidate, so a report can be recomputed (or another grid's LOCO run) without searching again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            recall = [[p.rrf_k, p.time_weight, value] for p, value in row["recall"].items()]
            handle.write(json.dumps({**row, "recall": recall}) + "\n")


def load_recall_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row["recall"] = {RetrievalParams(int(k), float(w)): v for k, w, v in row["recall"]}
            rows.append(row)
    return rows


def asked_dates(histories: dict[str, list]) -> dict[str, datetime]:
    """sample id -> the day after its last session (as retrieval_eval asks)."""
    out = {}
    for namespace, sessions in histories.items():
        last = max(s.started_at for s in sessions if s.started_at)
        out[namespace.split(":", 1)[1]] = datetime(last.year, last.month, last.day) + timedelta(days=1)
    return out
