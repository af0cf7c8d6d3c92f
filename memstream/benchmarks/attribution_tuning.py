"""Tuning the attribution decision by leave-one-conversation-out, without generating a word.

The decision reads retrieval only (who speaks in the evidence and how it scores), so the signals of every LoCoMo
question are computed once, with the agent's own planning and retrieval steps (names found and dropped from the
query, memstream retrieval, top k), and saved. Parameters are then chosen offline: for each dev conversation, on
the other four, and scored on it. Two figures per choice:

- false "not mentioned": share of answerable questions (categories 1-4) on which the decision abstains;
- adversarial caught: share of adversarial questions (category 5) on which it abstains (their right answer).

The fit keeps the false-"not mentioned" rate of the training conversations at or under a cap and, within that,
catches the most adversarial questions; the candidate list is ordered from most to least inclined to answer, so
ties err towards answering. A cap of `MAX_FALSE_NM` on the questions a value is fitted on lets more through on
questions it was not fitted on, so the cap itself is chosen one level down: the largest of `CAPS` whose own
leave-one-conversation-out rate, inside the training conversations, stays at or under `MAX_FALSE_NM`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from memstream.agent.attribution import (
    AttributionParams,
    abstains as decision_abstains,
    EvidenceHit,
    check_attribution_margin,
    is_person,
    named_people,
    query_terms,
    strip_names,
    weighed_evidence,
)
from memstream.benchmarks.tuning import leave_one_group_out, pick_best

MAX_FALSE_NM = 0.02
CAPS = (0.02, 0.015, 0.01, 0.005)
"""Training caps tried, largest first."""
ANSWERABLE = (1, 2, 3, 4)


def collect_signals(
    data_path: Path,
    work_dir: Path,
    embedders=None,
    progress: Callable[[str], None] | None = None,
    answer_backend=None,
    answer_for: set[str] | None = None,
    sink: Callable[[dict[str, Any]], None] | None = None,
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per LoCoMo question: what the agent's retrieval returns for it (k = agent.top_k).

    With `answer_backend`, the questions in `answer_for` are also answered by the agent as the benchmark asks them,
    with the attribution decision, the extractive step and answer trimming off (all applied offline, per fold), and the row
    gets the model's `prediction` and `prompt_tokens`. `sink` receives each row as it is made; `only` limits the
    rows to those question ids."""
    from memstream.agent.controller import TurnOptions
    from memstream.agent.planner import plan_turn
    from memstream.backends.scripted import ScriptedBackend
    from memstream.benchmarks.questions import load_benchmark
    from memstream.benchmarks.runner import bench_settings, build_parts, replay
    from memstream.benchmarks.systems import agent_answer

    say = progress or (lambda message: None)
    data = load_benchmark("locomo", data_path)
    settings = bench_settings(work_dir, **{"agent.attribution_check": False, "agent.extract_kinds": [], "agent.trim_short_answers": "off"})
    parts = build_parts(settings, backend=answer_backend or ScriptedBackend(), embedders=embedders)
    agent = parts.agent
    rows = []
    try:
        replay(parts, data, list(data.histories), work_dir / "state", facts=True)
        say(f"replayed {len(data.histories)} conversations; collecting signals for {len(data.questions)} questions")
        options = TurnOptions(retrieval_mode="memstream", plan=True, remember=False, short_answer=True)
        questions = data.questions
        if only is not None:
            # Interleaved across conversations, so a run stopped early still covers each of them.
            position: dict[str, int] = {}
            keyed = []
            for question in (q for q in questions if q.qid in only):
                position[question.namespace] = position.get(question.namespace, -1) + 1
                keyed.append((position[question.namespace], question.namespace, question))
            questions = [q for _, _, q in sorted(keyed, key=lambda t: (t[0], t[1]))]
        for question in questions:
            # The agent's steps 2-3 (controller.stream), without composing or generating.
            plan = plan_turn(question.question, [], question.asked_at, None, False, settings.retrieval.time_expansion)
            speakers = agent.memory.speakers(question.namespace)
            people = named_people(plan.query, speakers)
            asked_about = people[0] if len(people) == 1 else None
            plan.query = strip_names(plan.query, people)
            hits = agent._retrieve(question.namespace, plan, question.asked_at, options, flash=set(), exclude=set())[0] if plan.needs_memory else []
            row = {
                "qid": question.qid,
                "conversation": question.namespace,
                "code": question.code,
                "asked_about": asked_about,
                "people": people,
                "query": plan.query,
                "evidence": question.evidence,
                "retrieved": [h.source_id or str(h.turn.id) for h in hits],
                "speakers": sorted(s for s in speakers if is_person(s)),
                "hits": [{"speaker": h.turn.speaker, "fused": h.fused_score} for h in hits],
                "question": question.question,
                "gold": question.gold,
                "choices": question.choices,
                "texts": [h.turn.text for h in hits],
                # Per-hit dense/lexical scores and matching key, so other attribution signals can be fitted offline.
                "scores": [{"dense": h.dense_score, "lexical": h.lexical_score, "via": h.matched_via} for h in hits],
            }
            if answer_backend is not None and answer_for is not None and question.qid in answer_for:
                answer = agent_answer(agent, "memstream", question, settings.agent.top_k, 32)
                row.update(prediction=answer.prediction, prompt_tokens=answer.prompt_tokens, latency_s=round(answer.latency_s, 3))
            rows.append(row)
            if sink is not None:
                sink(row)
    finally:
        agent.close()
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hits_of(row: dict[str, Any]) -> list[EvidenceHit]:
    """The row's hits with the decision's text signals computed from its saved texts and query (rows saved before a
    signal existed still carry everything it needs). Rows saved without the conversation's speakers use the people
    among the hits and the asked-about person: in a two-person conversation that is exact for every hit that matters
    (a turn by the other person puts both in the list)."""
    key = "_evidence_hits"
    if key not in row:
        terms = query_terms(row.get("query") or row["question"])
        asked = row["asked_about"] or ""
        people = row.get("speakers") or sorted({h["speaker"] for h in row["hits"] if is_person(h["speaker"])} | ({asked} if asked else set()))
        row[key] = [EvidenceHit.from_text(h["speaker"], h["fused"], text, asked, people, terms) for h, text in zip(row["hits"], row["texts"], strict=True)]
    return row[key]


def abstains(row: dict[str, Any], params: AttributionParams | None) -> bool:
    """Would the decision reply "not mentioned" to this question? (None: the decision is off.)"""
    if params is None or not row["asked_about"]:
        return False
    key = ("_weighed", params.rank_decay)
    if key not in row:
        row[key] = weighed_evidence(hits_of(row), params.rank_decay)
    return decision_abstains(row["asked_about"], hits_of(row), params, row[key])


def abstains_old_rule(row: dict[str, Any], margin: float) -> bool:
    """The single-margin rule this decision replaces (kept here to report what it did)."""
    return bool(row["asked_about"]) and check_attribution_margin(row["asked_about"], hits_of(row), margin) is not None


def outcome(pairs: Sequence[tuple[dict[str, Any], Any]], decide: Callable[[dict[str, Any], Any], bool] = abstains) -> dict[str, Any]:
    answerable = [(r, p) for r, p in pairs if r["code"] in ANSWERABLE]
    adversarial = [(r, p) for r, p in pairs if r["code"] == 5]
    false_nm = sum(decide(r, p) for r, p in answerable)
    caught = sum(decide(r, p) for r, p in adversarial)
    return {
        "answerable": len(answerable),
        "adversarial": len(adversarial),
        "false_not_mentioned": false_nm,
        "false_not_mentioned_rate": round(false_nm / len(answerable), 4) if answerable else None,
        "adversarial_caught": caught,
        "adversarial_caught_rate": round(caught / len(adversarial), 4) if adversarial else None,
    }


def candidates() -> list[AttributionParams]:
    """The grid, most inclined to answer first (so `pick_best` ties err towards answering): a lower max_share and
    a higher min_other each make the decision answer more often."""
    return [
        AttributionParams(rank_decay=decay, max_share=share, min_other=other)
        for decay in (0.2, 0.5, 1.0)
        for share in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
        for other in (12, 10, 8, 6, 5, 4, 3, 2, 1, 0)
    ]


def fit_capped(rows: list[dict[str, Any]], cap: float, grid: Sequence[AttributionParams] | None = None) -> AttributionParams:
    """The value catching the most adversarial questions of `rows` with at most `cap` of their answerable ones abstained."""
    grid = list(grid or candidates())
    answerable = [r for r in rows if r["code"] in ANSWERABLE]
    adversarial = [r for r in rows if r["code"] == 5]

    def objective(params: AttributionParams) -> tuple:
        false_rate = sum(abstains(r, params) for r in answerable) / max(1, len(answerable))
        caught = sum(abstains(r, params) for r in adversarial)
        within = false_rate <= cap
        return (within, caught if within else -false_rate)

    return pick_best(grid, objective)


def by_conversation(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["conversation"], []).append(row)
    return groups


def fit(rows: list[dict[str, Any]], grid: Sequence[AttributionParams] | None = None) -> AttributionParams:
    """`fit_capped` at the largest of CAPS whose leave-one-conversation-out false-"not mentioned" rate within `rows`
    is at most MAX_FALSE_NM (rows of fewer than three conversations: the cap MAX_FALSE_NM itself)."""
    groups = by_conversation(rows)
    if len(groups) < 3:
        return fit_capped(rows, MAX_FALSE_NM, grid)
    for cap in CAPS:
        inner = leave_one_group_out(groups, lambda part, cap=cap: fit_capped(part, cap, grid), outcome)
        if inner.held_out["false_not_mentioned_rate"] <= MAX_FALSE_NM:
            return fit_capped(rows, cap, grid)
    return fit_capped(rows, CAPS[-1], grid)


def tune(rows: list[dict[str, Any]]) -> dict[str, Any]:
    result = leave_one_group_out(by_conversation(rows), fit, outcome)
    old = {str(m): outcome([(r, m) for r in rows], abstains_old_rule) for m in (0.005,)}
    return {"loco": result.to_dict(lambda p: asdict(p)), "old_rule_in_sample": old, "max_false_not_mentioned": MAX_FALSE_NM}
