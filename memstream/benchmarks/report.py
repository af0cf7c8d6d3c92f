"""Reports from predictions: results.json, report.md and PNG plots, always rebuilt from
`predictions.jsonl` (so `memstream bench report DIR` reproduces a run's numbers without rerunning it).

results.json: {"benchmark", "config", "systems": {name: {metric: value, "per_category": {cat: {...}}}},
               "failures": {...}, "problems": [...]}
Latency is wall time per question, so it is the one field that differs between two identical runs.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from memstream.benchmarks.scoring import bleu1, locomo_f1

RECALL_KS = (5, 10)


def recall_any(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return 1.0 if relevant & set(ranked[:k]) else 0.0


def recall_all(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return 1.0 if relevant <= set(ranked[:k]) else 0.0


def ndcg(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary-relevance NDCG@k."""
    gains = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return gains / ideal if ideal else 0.0


def evidence_recall(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Fraction of the evidence found in the top k (LoCoMo's recall_acc, at a cut-off)."""
    return len(relevant & set(ranked[:k])) / len(relevant)


def _dedup(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _session_of(source_id: str) -> str:
    """LoCoMo 'D3:7' -> 'D3'; LongMemEval 'answer_280352e9_1:4' -> 'answer_280352e9_1'."""
    return source_id.rsplit(":", 1)[0]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def score_record(record: dict, benchmark: str) -> dict[str, float]:
    """Per-prediction scores (answer quality and retrieval) from one predictions.jsonl record."""
    scores: dict[str, float] = {}
    prediction = record.get("prediction") or ""
    if benchmark == "locomo" and record.get("code") is not None:
        scores["f1"] = locomo_f1(int(record["code"]), prediction, record["gold"])
        scores["bleu1"] = bleu1(prediction, record["gold"]) if record["code"] != 5 else scores["f1"]
    if record.get("judge") is not None:
        scores["judge"] = 1.0 if record["judge"] else 0.0
    retrieved = record.get("retrieved") or []
    evidence = set(record.get("evidence") or [])
    sessions = set(record.get("evidence_sessions") or [])
    if record.get("context") and evidence:
        scores["evidence_in_context"] = len(evidence & set(record["context"])) / len(evidence)
    if record.get("error") or record["system"] in ("no-memory", "full-context"):
        return scores
    if benchmark == "locomo" and evidence:
        for k in RECALL_KS:
            scores[f"evidence_recall@{k}"] = evidence_recall(retrieved, evidence, k)
    if benchmark == "longmemeval" and not record.get("abstention"):
        ranked_sessions = _dedup([_session_of(r) for r in retrieved])
        for k in RECALL_KS:
            if sessions:
                scores[f"session_recall_any@{k}"] = recall_any(ranked_sessions, sessions, k)
                scores[f"session_recall_all@{k}"] = recall_all(ranked_sessions, sessions, k)
                scores[f"session_ndcg@{k}"] = ndcg(ranked_sessions, sessions, k)
            if evidence:
                scores[f"turn_recall_any@{k}"] = recall_any(retrieved, evidence, k)
                scores[f"turn_recall_all@{k}"] = recall_all(retrieved, evidence, k)
                scores[f"turn_ndcg@{k}"] = ndcg(retrieved, evidence, k)
    return scores


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _aggregate(records: list[dict], benchmark: str) -> dict[str, Any]:
    collected: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for name, value in score_record(record, benchmark).items():
            collected[name].append(value)
    answered = [r for r in records if not r.get("error")]
    out: dict[str, Any] = {"questions": len(records)}
    for name in sorted(collected):
        out[name] = _mean(collected[name])
    if benchmark == "longmemeval":
        abstentions = [1.0 if r["judge"] else 0.0 for r in records if r.get("abstention") and r.get("judge") is not None]
        out["abstention_accuracy"] = _mean(abstentions)
    out["prompt_tokens"] = _mean([r["prompt_tokens"] for r in answered])
    out["completion_tokens"] = _mean([r["completion_tokens"] for r in answered])
    latencies = [r["latency_s"] for r in answered]
    out["latency_p50_s"] = round(percentile(latencies, 0.5), 3)
    out["latency_p95_s"] = round(percentile(latencies, 0.95), 3)
    out["errors"] = len(records) - len(answered)
    out["judge_failures"] = sum(1 for r in records if r.get("judge_error"))
    return out


def build_results(records: list[dict], config: dict, problems: list[str]) -> dict[str, Any]:
    benchmark = config.get("benchmark", "locomo")
    by_system: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_system[record["system"]].append(record)
    order = [s for s in config.get("systems", []) if s in by_system] + sorted(set(by_system) - set(config.get("systems", [])))
    systems: dict[str, Any] = {}
    for name in order:
        rows = sorted(by_system[name], key=lambda r: r["qid"])
        summary = _aggregate(rows, benchmark)
        per_category: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            per_category[row["category"]].append(row)
        summary["per_category"] = {cat: _aggregate(per_category[cat], benchmark) for cat in sorted(per_category)}
        systems[name] = summary
    return {
        "benchmark": benchmark,
        "config": config,
        "systems": systems,
        "failures": {
            "load_problems": len(problems),
            "answer_errors": {name: s["errors"] for name, s in systems.items()},
            "judge_failures": {name: s["judge_failures"] for name, s in systems.items()},
        },
        "problems": problems,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _headline(benchmark: str) -> str:
    return "f1" if benchmark == "locomo" else "judge"


def markdown(results: dict[str, Any]) -> str:
    benchmark = results["benchmark"]
    systems = results["systems"]
    config = results["config"]
    if benchmark == "locomo":
        columns = ["questions", "f1", "bleu1", "judge", "evidence_recall@5", "evidence_recall@10", "evidence_in_context"]
    else:
        columns = ["questions", "judge", "abstention_accuracy", "session_recall_any@5", "session_recall_all@5", "session_ndcg@5", "turn_recall_any@10", "turn_ndcg@10"]
    columns += ["prompt_tokens", "completion_tokens", "latency_p50_s", "latency_p95_s", "errors", "judge_failures"]
    lines = [f"# {benchmark} results", ""]
    lines.append(f"Data: `{Path(config.get('data', '')).name}`; backend: {config.get('backend') or '-'}; judge: {config.get('judge') or 'none'}; "
                 f"top_k {config.get('top_k')}; answer cap {config.get('max_answer_tokens')} tokens.")
    lines += ["", "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, summary in systems.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(summary.get(c)) for c in columns) + " |")
    headline = _headline(benchmark)
    categories = sorted({cat for s in systems.values() for cat in s["per_category"]})
    if categories and systems:
        lines += ["", f"## {headline} per category", "", "| category | n | " + " | ".join(systems) + " |", "|---" * (len(systems) + 2) + "|"]
        for cat in categories:
            n = max(s["per_category"].get(cat, {}).get("questions", 0) for s in systems.values())
            cells = [_fmt(s["per_category"].get(cat, {}).get(headline)) for s in systems.values()]
            lines.append(f"| {cat} | {n} | " + " | ".join(cells) + " |")
    failures = results["failures"]
    lines += ["", "## Failures", "", f"- data items skipped: {failures['load_problems']}"]
    lines += [f"  - {p}" for p in results["problems"][:20]]
    lines.append(f"- answer errors: {failures['answer_errors']}")
    lines.append(f"- judge failures: {failures['judge_failures']}")
    lines += ["", "Plots: `per_category.png`, `accuracy_vs_tokens.png`.", ""]
    return "\n".join(lines)


def write_reports(out_dir: str | Path) -> dict[str, Any]:
    """Rebuild results.json, report.md and the plots from DIR/predictions.jsonl."""
    from memstream.benchmarks.plots import plot_accuracy_vs_tokens, plot_per_category
    from memstream.benchmarks.runner import CONFIG, PREDICTIONS, PROBLEMS, read_predictions

    out_dir = Path(out_dir)
    if not (out_dir / CONFIG).exists():
        raise FileNotFoundError(f"{out_dir}: no {CONFIG}; is this a benchmark run directory?")
    config = json.loads((out_dir / CONFIG).read_text(encoding="utf-8"))
    problems = json.loads((out_dir / PROBLEMS).read_text(encoding="utf-8")) if (out_dir / PROBLEMS).exists() else []
    records = read_predictions(out_dir / PREDICTIONS)
    # A resumed run can hold a question twice only if it was redone after a torn write; keep the last.
    latest = {(r["qid"], r["system"]): r for r in records}
    results = build_results(list(latest.values()), config, problems)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(results), encoding="utf-8")
    headline = _headline(results["benchmark"])
    plot_per_category(results, headline, out_dir / "per_category.png")
    plot_accuracy_vs_tokens(results, headline, out_dir / "accuracy_vs_tokens.png")
    return results
