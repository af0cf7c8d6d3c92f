"""Retrieval-only evaluation on LoCoMo: turn-level evidence recall of each system, run in one process.

Each LoCoMo conversation is ingested into its own user namespace ("locomo:<sample_id>"),
indexed once (every key kind), then every non-adversarial question with evidence is
asked of each system: memstream (all designs on), the plain baselines hybrid / bm25 /
dense, and the ablation (each design switched off, and each alone on top of hybrid).
LoCoMo questions carry no date of their own; they are asked as of the day after the
conversation's last session, which is when a user would ask them.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from memstream.benchmarks.datasets import LOCOMO_CATEGORIES, LocomoQuestion, load_locomo_questions
from memstream.benchmarks.metrics import ndcg, percentile, recall_all, recall_any
from memstream.memory.importers import load_file
from memstream.memory.core import Memory, open_memory
from memstream.retrieval.embedder import EmbedderCache, recorded_name
from memstream.retrieval.retriever import Retriever

KS = (1, 5, 10, 20)
DESIGNS = ("session_decomposition", "fact_expansion", "time_expansion")
EMBED_TIMING_SAMPLE = 50


@dataclass(frozen=True)
class SystemSpec:
    name: str
    mode: str
    designs: tuple[str, ...] = DESIGNS
    """Which designs are on (memstream mode only)."""


BASELINES = [
    SystemSpec("memstream", "memstream"),
    SystemSpec("hybrid", "hybrid", ()),
    SystemSpec("bm25", "bm25", ()),
    SystemSpec("dense", "dense", ()),
]


def ablation_specs() -> list[SystemSpec]:
    specs = []
    for design in DESIGNS:
        specs.append(SystemSpec(f"memstream without {design}", "memstream", tuple(d for d in DESIGNS if d != design)))
    for design in DESIGNS:
        specs.append(SystemSpec(f"hybrid + {design}", "memstream", (design,)))
    return specs


def locomo_user(sample_id: str) -> str:
    return f"locomo:{sample_id}"


def select_questions(
    questions: Iterable[LocomoQuestion], categories: Sequence[int] | None = None, limit: int | None = None
) -> list[LocomoQuestion]:
    """Non-adversarial questions with evidence (adversarial ones have nothing to find), filtered and limited."""
    chosen = [q for q in questions if not q.is_adversarial and q.evidence and (not categories or q.category in categories)]
    return chosen[:limit] if limit else chosen


def ingest_locomo(store: Memory, data_path: Path, sample_ids: set[str]) -> dict[str, datetime]:
    """Load each needed conversation into its own user (skipping ones already there); return each one's question date."""
    sessions = [s for s in load_file(data_path, "locomo") if s.conversation_id in sample_ids]
    by_sample: dict[str, list] = defaultdict(list)
    for session in sessions:
        by_sample[session.conversation_id].append(session)
    asked_at = {}
    for sample_id, sample_sessions in by_sample.items():
        user = locomo_user(sample_id)
        if not store.has_user(user):
            store.ingest(user, sample_sessions, atomic=True)
        last = max(s.started_at for s in sample_sessions if s.started_at)
        asked_at[sample_id] = datetime(last.year, last.month, last.day) + timedelta(days=1)
    return asked_at


def _configure(retriever: Retriever, spec: SystemSpec) -> None:
    for design in DESIGNS:
        setattr(retriever, design, design in spec.designs)


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def block(subset: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(subset)}
        for k in KS:
            out[f"recall_any@{k}"] = round(sum(r[f"any@{k}"] for r in subset) / len(subset), 4) if subset else None
            out[f"recall_all@{k}"] = round(sum(r[f"all@{k}"] for r in subset) / len(subset), 4) if subset else None
        out["ndcg@10"] = round(sum(r["ndcg@10"] for r in subset) / len(subset), 4) if subset else None
        return out

    summary = block(rows)
    latencies = [r["latency_ms"] for r in rows]
    summary["latency_ms_p50"] = round(percentile(latencies, 50), 2)
    summary["latency_ms_p95"] = round(percentile(latencies, 95), 2)
    per_category = {}
    for code, name in LOCOMO_CATEGORIES.items():
        subset = [r for r in rows if r["category"] == code]
        if subset:
            per_category[name] = block(subset)
    summary["per_category"] = per_category
    return summary


def evaluate_locomo_retrieval(
    data_path: str | Path,
    settings,
    work_dir: Path,
    *,
    limit: int | None = None,
    categories: Sequence[int] | None = None,
    systems: Sequence[str] | None = None,
    ablation: bool = True,
    embedders: EmbedderCache | None = None,
    progress: Callable[[str], None] | None = None,
    db_url: str | None = None,
) -> dict[str, Any]:
    """Run the retrieval evaluation; returns the results dict (see write_results for the files). `db_url`: an empty
    database to load into (PostgreSQL: the database-resident index); default a fresh SQLite file in `work_dir`."""
    data_path = Path(data_path)
    say = progress or (lambda message: None)
    questions = select_questions(load_locomo_questions(data_path), categories, limit)
    if not questions:
        raise ValueError(f"{data_path}: no non-adversarial questions with evidence match the selection")
    specs = [s for s in BASELINES if not systems or s.name in systems]
    unknown = set(systems or ()) - {s.name for s in BASELINES}
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(s.name for s in BASELINES)}")
    extra = ablation_specs() if ablation else []
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"db_url": db_url or f"sqlite:///{work_dir / 'memstream.db'}"})
    store = open_memory(settings, embedders=embedders)
    try:
        started = time.perf_counter()
        asked_at = ingest_locomo(store, data_path, {q.sample_id for q in questions})
        say(f"ingested {len(asked_at)} conversations; indexing")
        store.flush()
        retriever = store.retriever
        indexed = retriever.indexed_turns_total()
        index_seconds = time.perf_counter() - started
        say(f"indexed {indexed} turns in {index_seconds:.1f}s; asking {len(questions)} questions")
        # Query embedding is timed on its own (one question at a time, as a live query would be), then all
        # questions are embedded in one batch and handed to the retriever, so system latencies compare search alone.
        embed_ms = []
        for question in questions[:EMBED_TIMING_SAMPLE]:
            t0 = time.perf_counter()
            retriever.embedder.embed([question.question])
            embed_ms.append((time.perf_counter() - t0) * 1000.0)
        texts = sorted({q.question for q in questions})
        retriever.prime_query_cache(texts, retriever.embedder.embed(texts))
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for spec in specs + extra:
            _configure(retriever, spec)
            for question in questions:
                user = locomo_user(question.sample_id)
                t0 = time.perf_counter()
                result = retriever.search(user, question.question, k=max(KS), now=asked_at[question.sample_id], mode=spec.mode)
                latency = (time.perf_counter() - t0) * 1000.0
                retrieved = [hit.source_id or str(hit.turn.id) for hit in result.hits]
                gold = set(question.evidence)
                row = {
                    "question_id": question.question_id,
                    "category": question.category,
                    "latency_ms": latency,
                    "ndcg@10": ndcg(retrieved, gold, 10),
                    "retrieved": retrieved,
                    "time_window": result.time_window.to_dict() if result.time_window else None,
                }
                for k in KS:
                    row[f"any@{k}"] = recall_any(retrieved, gold, k)
                    row[f"all@{k}"] = recall_all(retrieved, gold, k)
                rows[spec.name].append(row)
            say(f"{spec.name}: recall_any@10 = {_summarise(rows[spec.name])['recall_any@10']}")
        _configure(retriever, SystemSpec("memstream", "memstream"))
        results = {
            "benchmark": "locomo",
            "mode": "retrieval-only",
            "data": data_path.name,
            "questions": len(questions),
            "conversations": len(asked_at),
            "config": {
                "embedder": recorded_name(settings.embedder.model, settings.embedder.runtime),
                "retrieval": settings.retrieval.model_dump(),
                "ks": list(KS),
                "asked_at": "the day after each conversation's last session",
                "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
                "index_seconds": round(index_seconds, 1),
                "query_embedding_ms_p50": round(percentile(embed_ms, 50), 2),
                "query_embedding_ms_p95": round(percentile(embed_ms, 95), 2),
                "latency_note": "search latency with the query embedding precomputed; query embedding timed separately",
            },
            "systems": {spec.name: _summarise(rows[spec.name]) for spec in specs},
            "ablation": {spec.name: _summarise(rows[spec.name]) for spec in ([s for s in specs if s.name == "memstream"] + extra)},
        }
        return results, rows
    finally:
        store.close()


def write_results(results: dict[str, Any], rows: dict[str, list[dict[str, Any]]], out_dir: Path) -> None:
    """DIR/results.json, DIR/report.md and DIR/per_question.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    with (out_dir / "per_question.jsonl").open("w", encoding="utf-8") as handle:
        for system, system_rows in rows.items():
            for row in system_rows:
                handle.write(json.dumps({"system": system, **row}) + "\n")
    (out_dir / "report.md").write_text(render_report(results), encoding="utf-8")


def render_report(results: dict[str, Any]) -> str:
    lines = [
        "# LoCoMo retrieval (turn-level evidence recall)",
        "",
        f"Data: `{results['data']}`: {results['questions']} non-adversarial questions with evidence, "
        f"{results['conversations']} conversations, each in its own user namespace. "
        f"Embedder `{results['config']['embedder']}`; indexing took {results['config']['index_seconds']} s. "
        "Questions are asked as of the day after the conversation's last session. "
        f"Latencies are of the search alone (query embedding precomputed); one query embedding takes "
        f"p50 {results['config']['query_embedding_ms_p50']} ms / p95 {results['config']['query_embedding_ms_p95']} ms on this machine.",
        "",
        "## Systems",
        "",
        _table(results["systems"]),
        "",
        "## Per category: recall_any@10",
        "",
    ]
    categories = [name for name in LOCOMO_CATEGORIES.values() if any(name in s["per_category"] for s in results["systems"].values())]
    lines.append("| system | " + " | ".join(f"{c} (n={next(iter(results['systems'].values()))['per_category'].get(c, {}).get('n', 0)})" for c in categories) + " |")
    lines.append("|---" * (len(categories) + 1) + "|")
    for name, summary in results["systems"].items():
        cells = [f"{summary['per_category'].get(c, {}).get('recall_any@10', float('nan')):.3f}" for c in categories]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.get("ablation"):
        lines += ["", "## Ablation (each LongMemEval design off, and each alone on top of hybrid)", "", _table(results["ablation"])]
    return "\n".join(lines) + "\n"


def _table(systems: dict[str, dict[str, Any]]) -> str:
    header = ["system"] + [f"any@{k}" for k in KS] + [f"all@{k}" for k in KS] + ["ndcg@10", "p50 ms", "p95 ms"]
    out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, s in systems.items():
        cells = [name] + [f"{s[f'recall_any@{k}']:.3f}" for k in KS] + [f"{s[f'recall_all@{k}']:.3f}" for k in KS]
        cells += [f"{s['ndcg@10']:.3f}", f"{s['latency_ms_p50']:.1f}", f"{s['latency_ms_p95']:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
