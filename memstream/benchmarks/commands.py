"""What `memstream bench locomo|longmemeval|report` call: options in, one library call, a summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memstream.benchmarks.runner import RunConfig, bench_settings, build_parts, run_benchmark
from memstream.benchmarks.systems import check_systems

DEFAULT_SYSTEMS = ["memstream", "full-context", "hybrid"]
JUDGE_OFF = ("none", "off")


def parse_categories(value: str | None) -> list[str] | None:
    """'1,2,4' or 'temporal,multi-session' -> a list; None or '' -> all."""
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def full_run(
    benchmark: str,
    data: Path,
    out: Path,
    systems: list[str] | None = None,
    limit: int | None = None,
    per_history: int | None = None,
    categories: str | None = None,
    backend: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    judge_backend: str | None = None,
    judge_model: str | None = None,
    concurrency: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build settings, backends and the run config from CLI options, then run.

    judge_backend: None -> no judge for LoCoMo (F1 is the headline) and the answer backend for
    LongMemEval (judge accuracy is its headline); 'none' -> never; a kind (local | openai | scripted)
    -> that backend, with `judge_model`.
    """
    if concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {concurrency}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    from memstream.backends.models import make_backend

    settings = bench_settings(out, **{"backend.kind": backend, "backend.model": model, "backend.base_url": base_url})
    answer_backend = make_backend(settings.backend, settings.attention)
    judge = None
    judge_name = None
    if judge_backend is None and benchmark == "longmemeval":
        judge, judge_name = answer_backend, f"{settings.backend.kind}:{settings.backend.model}"
    elif judge_backend is not None and judge_backend not in JUDGE_OFF:
        judge_settings = settings.backend.model_copy(update={"kind": judge_backend, **({"model": judge_model} if judge_model else {})})
        judge = make_backend(judge_settings, settings.attention)
        judge_name = f"{judge_settings.kind}:{judge_settings.model}"
    config = RunConfig(
        benchmark=benchmark,
        data=str(data),
        systems=check_systems(systems or DEFAULT_SYSTEMS),
        limit=limit,
        per_history=per_history,
        categories=parse_categories(categories),
        concurrency=concurrency,
        backend=f"{settings.backend.kind}:{settings.backend.model}",
        judge=judge_name,
    )
    parts = build_parts(settings, backend=answer_backend, judge_backend=judge)
    return run_benchmark(config, out, parts=parts, resume=resume, progress=progress)


def summary_lines(results: dict[str, Any]) -> list[str]:
    headline = "f1" if results["benchmark"] == "locomo" else "judge"
    lines = []
    for name, summary in results["systems"].items():
        lines.append(
            f"{name:<13} {headline} {summary.get(headline) if summary.get(headline) is not None else '-'}  "
            f"prompt tokens {summary.get('prompt_tokens')}  p50 {summary.get('latency_p50_s')}s  "
            f"errors {summary.get('errors')}  judge failures {summary.get('judge_failures')}"
        )
    problems = results["failures"]["load_problems"]
    if problems:
        lines.append(f"{problems} data item(s) skipped (see problems.json)")
    return lines


def beam_run(
    data: Path,
    out: Path,
    systems: list[str] | None = None,
    limit: int | None = None,
    backend: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    judge_backend: str | None = None,
    judge_model: str | None = None,
    progress=None,
) -> dict[str, Any]:
    """`memstream bench beam`: retrieval-only without --judge-model, answers judged on the rubric with one.

    Token counts use the answer model's tokenizer either way (the configured backend)."""
    from memstream.backends.models import make_backend
    from memstream.benchmarks.beam_eval import SYSTEMS, BeamRunConfig, evaluate_beam, write_results

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    settings = bench_settings(out, **{"backend.kind": backend, "backend.model": model, "backend.base_url": base_url})
    answer_backend = make_backend(settings.backend, settings.attention)
    judge = None
    judge_name = None
    if judge_model and (judge_backend or "") not in JUDGE_OFF:
        judge_settings = settings.backend.model_copy(update={"kind": judge_backend or settings.backend.kind, "model": judge_model})
        judge = make_backend(judge_settings, settings.attention)
        judge_name = f"{judge_settings.kind}:{judge_settings.model}"
    config = BeamRunConfig(
        data=str(data), systems=tuple(systems or SYSTEMS), limit=limit, judge=judge_name,
        backend=f"{settings.backend.kind}:{settings.backend.model}",
    )
    results, rows = evaluate_beam(
        config, settings, out / "work", count_tokens=answer_backend.count_tokens,
        answer_backend=answer_backend if judge else None, judge_backend=judge, progress=progress,
    )
    write_results(results, rows, out)
    return results
