"""Leave-one-conversation-out for the model-free answer steps on a LoCoMo QA run: the attribution decision and
which question kinds the extractive step answers, how it cuts a "what" answer from its sentence and how many of
the question's words that sentence must share, and whether the model's short answers are trimmed of the words that
restate the question (agent/extract.py trim_answer).

Each row holds a question's retrieval signals, the top records' texts and the model's answer with both steps
off (`attribution_tuning.collect_signals` with an answer backend). A step's effect on a question is then
computed offline: the attribution decision replaces the answer with "not mentioned"; the extractive step
replaces it with the span it finds; trimming rewrites the model's answer. So every fold's choice is scored on its held-out conversation without
asking the model again. Attribution parameters are fitted on all the training conversations' questions
(`signals`, retrieval only); the extraction kinds and style on the training rows of the QA run (mean F1).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from memstream.agent.attribution import AttributionParams
from memstream.agent.extract import KINDS, MIN_SHARED, STYLES, TRIMS, Extraction, extract_answer, question_kind, trim_answer
from memstream.agent.prompts import MISATTRIBUTED_REPLY
from memstream.benchmarks.answers import clean_prediction
from memstream.benchmarks.attribution_tuning import ANSWERABLE, abstains, abstains_old_rule
from memstream.benchmarks.attribution_tuning import fit as fit_attribution
from memstream.benchmarks.scoring import LOCOMO_CATEGORIES, locomo_f1
from memstream.benchmarks.tuning import leave_one_group_out, pick_best


@dataclass(frozen=True)
class AnswerParams:
    attribution: AttributionParams | None
    extract_kinds: tuple[str, ...]
    old_margin: float | None = None
    """Use the single-margin rule the decision replaced (baselines only) instead of `attribution`."""
    extract_style: str = "after"
    """How a "what" answer is cut from its sentence (agent/extract.py STYLES); "after" is the earlier rule."""
    extract_min_shared: int = 1
    """How many question words a "what" answer's sentence must share (1: any, the earlier rule)."""
    trim: str = "off"
    """Trim the model's short answers of the words that restate the question, and with "evidence" of the words in
    none of the records (agent.trim_short_answers; the row's `texts` are those records)."""

    def describe(self) -> dict[str, Any]:
        out = {"attribution": asdict(self.attribution) if self.attribution else None, "extract_kinds": list(self.extract_kinds)}
        if "what" in self.extract_kinds:
            out["extract_style"] = self.extract_style
            out["extract_min_shared"] = self.extract_min_shared
        out["trim"] = self.trim
        return out


def _abstains(row: dict[str, Any], params: AnswerParams) -> bool:
    if params.old_margin is not None:
        return abstains_old_rule(row, params.old_margin)
    return abstains(row, params.attribution)


def final_answer(row: dict[str, Any], params: AnswerParams) -> tuple[str, int, str]:
    """(prediction, prompt tokens, which step answered: attribution | extract | model)."""
    if _abstains(row, params):
        text = MISATTRIBUTED_REPLY.format(asked_about=row["asked_about"], speaker=row["hits"][0]["speaker"])
        return clean_prediction(text, row.get("choices")), 0, "attribution"
    if params.extract_kinds and row["texts"] and row.get("answered_by", "model") == "model":
        found = _extracted(row, params)
        if found is not None:
            return clean_prediction(found.text, row.get("choices")), 0, "extract"
    if params.trim != "off" and row["prompt_tokens"] > 0:
        # Only what the model wrote: a "when" answer from the date step (no prompt) is a date, nothing to trim.
        trimmed = trim_answer(row["prediction"], row["question"], row["texts"] if params.trim == "evidence" else None)
        return clean_prediction(trimmed, row.get("choices")), row["prompt_tokens"], "model"
    return row["prediction"], row["prompt_tokens"], "model"


def _extracted(row: dict[str, Any], params: AnswerParams) -> Extraction | None:
    """The extractive step on a row, kept on the row: it depends only on whether the question's kind is on, and for
    a "what" question on the style and the least shared words, so the grid's trims and kind subsets reuse it."""
    kind = question_kind(row["question"])
    if kind is None or kind not in params.extract_kinds:
        return None
    key = ("_extracted", params.extract_style, params.extract_min_shared) if kind == "what" else ("_extracted",)
    if key not in row:
        row[key] = extract_answer(row["question"], row["texts"], row["people"], (kind,), _speakers(row), row["asked_about"],
                                  params.extract_style, params.extract_min_shared)
    return row[key]


def _speakers(row: dict[str, Any]) -> list[str | None]:
    return [h["speaker"] for h in row["hits"]]


def score(pairs: Sequence[tuple[dict[str, Any], AnswerParams]]) -> dict[str, Any]:
    scored = []
    for row, params in pairs:
        prediction, tokens, step = final_answer(row, params)
        scored.append((row, locomo_f1(row["code"], prediction, row["gold"]), tokens, step, prediction))
    out: dict[str, Any] = {"n": len(scored)}
    out["f1"] = round(sum(f for _, f, _, _, _ in scored) / len(scored), 4) if scored else None
    per = {}
    for code, name in LOCOMO_CATEGORIES.items():
        subset = [f for r, f, _, _, _ in scored if r["code"] == code]
        if subset:
            per[name] = {"n": len(subset), "f1": round(sum(subset) / len(subset), 4)}
    out["per_category"] = per
    answerable = [(r, step) for r, _, _, step, _ in scored if r["code"] in ANSWERABLE]
    false_nm = sum(1 for (r, f, _, step, p) in scored if r["code"] in ANSWERABLE and "not mentioned" in p.lower())
    out["false_not_mentioned_rate"] = round(false_nm / len(answerable), 4) if answerable else None
    out["false_not_mentioned_by_attribution"] = sum(1 for r, step in answerable if step == "attribution")
    out["prompt_tokens"] = round(sum(t for _, _, t, _, _ in scored) / len(scored), 1) if scored else None
    out["answered_by"] = {step: sum(1 for *_, s, _ in scored if s == step) for step in ("attribution", "extract", "model")}
    return out


def kind_subsets() -> list[tuple[str, ...]]:
    """Every subset of the extraction kinds, fewest first (ties keep the model writing)."""
    return [combo for size in range(len(KINDS) + 1) for combo in itertools.combinations(KINDS, size)]


def extraction_grid() -> list[tuple[tuple[str, ...], str, str, int]]:
    """(kinds, style, trim, min_shared) for every kind subset; the style and the least shared words only matter
    with "what" on, so only then are they varied. The earlier behaviour first ("after", no trimming, any shared
    word): a tie keeps it."""
    return [
        (kinds, style, trim, min_shared)
        for trim in TRIMS
        for kinds in kind_subsets()
        for style in (STYLES if "what" in kinds else ("after",))
        for min_shared in (MIN_SHARED if "what" in kinds else (1,))
    ]


def tune_answers(qa_rows: list[dict[str, Any]], signals: list[dict[str, Any]]) -> dict[str, Any]:
    """LOCO over the QA rows; attribution fitted on the training conversations' `signals` rows."""

    def fit(train: list[dict[str, Any]]) -> AnswerParams:
        conversations = {r["conversation"] for r in train}
        attribution = fit_attribution([s for s in signals if s["conversation"] in conversations])

        def params(choice: tuple[tuple[str, ...], str, str, int]) -> AnswerParams:
            kinds, style, trim, min_shared = choice
            return AnswerParams(attribution, kinds, extract_style=style, trim=trim, extract_min_shared=min_shared)

        return params(pick_best(extraction_grid(), lambda choice: (score([(r, params(choice)) for r in train])["f1"],)))

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in qa_rows:
        groups.setdefault(row["conversation"], []).append(row)
    result = leave_one_group_out(groups, fit, score)
    before_kinds = ("name", "where", "count")
    baselines = {
        "model only (all steps off)": score([(r, AnswerParams(None, ())) for r in qa_rows]),
        "all extraction kinds (\"after\" style), attribution off": score([(r, AnswerParams(None, KINDS)) for r in qa_rows]),
        "all extraction kinds (\"content\" style), attribution off": score([(r, AnswerParams(None, KINDS, extract_style="content")) for r in qa_rows]),
        "model answers trimmed of the question's words, other steps off": score([(r, AnswerParams(None, (), trim="question")) for r in qa_rows]),
        "model answers trimmed of the question's and ungrounded words, other steps off": score([(r, AnswerParams(None, (), trim="evidence")) for r in qa_rows]),
        # What shipped first: the margin rule (0.005, picked on this dev set).
        "before: margin rule 0.005, extract name/where/count": score([(r, AnswerParams(None, before_kinds, old_margin=0.005)) for r in qa_rows]),
    }
    return {"loco": result.to_dict(lambda p: p.describe()), "fixed": baselines}


def extraction_alone(rows: list[dict[str, Any]], style: str = "content") -> dict[str, Any]:
    """Model-free view of the extractive step over retrieval-only rows: per question kind, how often it finds a
    span and that span's F1 against the gold answer (answerable questions only; no model answer to compare)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        asked = [r for r in rows if r["code"] in ANSWERABLE and question_kind(r["question"]) == kind]
        fired = []
        for r in asked:
            found = extract_answer(r["question"], r["texts"], r["people"], (kind,), _speakers(r), r["asked_about"], style) if r["texts"] else None
            if found is not None:
                fired.append((r, locomo_f1(r["code"], clean_prediction(found.text), r["gold"])))
        per = {}
        for code, name in LOCOMO_CATEGORIES.items():
            subset = [f for r, f in fired if r["code"] == code]
            if subset:
                per[name] = {"n": len(subset), "f1": round(sum(subset) / len(subset), 4)}
        out[kind] = {"questions": len(asked), "fired": len(fired), "f1_where_fired": round(sum(f for _, f in fired) / len(fired), 4) if fired else None, "per_category": per}
    return out
