"""`memstream bench ...`: the benchmark runs (LoCoMo, LongMemEval, BEAM) and rebuilding a run's report.

A sub-app of its own because these commands drive the evaluation harness, not a user's memory; `cli.py` registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from memstream.cli_common import CliError, settings_from, user_errors

bench_app = typer.Typer(no_args_is_help=True, help="Reproducible benchmark runs (LoCoMo, LongMemEval).")


@bench_app.command("locomo")
def bench_locomo(
    data: Path = typer.Option(..., "--data", help="A locomo10.json-format file."),
    out: Path = typer.Option(Path("bench-locomo"), "--out", "-o", help="Output directory (results.json, report.md)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Only the first N questions."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated LoCoMo categories, e.g. 1,2,4."),
    system: Optional[List[str]] = typer.Option(None, "--system", "-s", help="Systems to run (repeatable)."),
    retrieval_only: bool = typer.Option(False, "--retrieval-only", help="Measure evidence recall only (no answers, no model)."),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation", help="Retrieval-only: also run each design on and off."),
    resume: bool = typer.Option(False, "--resume", help="Skip questions already answered in DIR."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Answer backend kind (local | openai | scripted)."),
    judge_backend: Optional[str] = typer.Option(None, "--judge-backend", help="LLM-as-judge backend kind, or none."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Questions in flight against remote backends."),
    per_conversation: Optional[int] = typer.Option(None, "--per-conversation", help="At most N questions per conversation (a subset covering all)."),
    model: Optional[str] = typer.Option(None, "--model", help="Answer model (name, path, or remote model)."),
) -> None:
    """Run LoCoMo: answers and F1 per system, or with --retrieval-only the evidence recall@k of each retriever.

    Example: memstream bench locomo --data locomo10.json --retrieval-only --out runs/locomo
    """
    with user_errors():
        if limit is not None and limit < 1:
            raise CliError(f"--limit must be >= 1, got {limit}")
        if not data.exists():
            raise CliError(f"{data}: no such file")
        if retrieval_only:
            _bench_locomo_retrieval(data, out, limit, categories, system, ablation)
            return
        _full_run("locomo", data, out, systems=system, limit=limit, categories=categories, backend=backend,
                  judge_backend=judge_backend, judge_model=judge_model, concurrency=concurrency, resume=resume,
                  per_history=per_conversation, model=model)


@bench_app.command("longmemeval")
def bench_longmemeval(
    data: Path = typer.Option(..., "--data", help="A LongMemEval file (_s, _m or oracle; official schema)."),
    out: Path = typer.Option(Path("bench-longmemeval"), "--out", "-o", help="Output directory."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Only the first N questions."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated question types, e.g. temporal-reasoning,multi-session."),
    system: Optional[List[str]] = typer.Option(None, "--system", "-s", help="Systems to run (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Skip questions already answered in DIR."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Answer backend kind (local | openai | scripted)."),
    model: Optional[str] = typer.Option(None, "--model", help="Answer model (name, path, or remote model)."),
    judge_backend: Optional[str] = typer.Option(None, "--judge-backend", help="Judge backend kind (default: the answer backend), or none."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Questions in flight against remote backends."),
) -> None:
    """Run LongMemEval: judge accuracy per question type, abstention, session/turn recall per system.

    Example: memstream bench longmemeval --data longmemeval_s.json --limit 50 --system memstream --system full-context --out runs/lme
    """
    with user_errors():
        if not data.exists():
            raise CliError(f"{data}: no such file")
        _full_run("longmemeval", data, out, systems=system, limit=limit, categories=categories, backend=backend, model=model,
                  judge_backend=judge_backend, judge_model=judge_model, concurrency=concurrency, resume=resume)


def _full_run(benchmark: str, data: Path, out: Path, **options) -> None:
    """Answers, judging and the report of one benchmark (LoCoMo or LongMemEval), then its summary on the terminal."""
    from memstream.benchmarks.commands import full_run, summary_lines

    results = full_run(benchmark, data, out, **options)
    for line in summary_lines(results):
        typer.echo(line)
    typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'} and plots")


@bench_app.command("beam")
def bench_beam(
    data: Path = typer.Option(..., "--data", help="BEAM data: a chat folder, a tier folder (chats/100K) or the dataset root."),
    out: Path = typer.Option(Path("bench-beam"), "--out", "-o", help="Output directory (results.json, report.md)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Only the first N chats."),
    system: Optional[List[str]] = typer.Option(None, "--system", "-s", help="Systems to run (repeatable): memstream, hybrid, bm25, dense."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Answer backend kind (local | openai | scripted); its tokenizer counts tokens."),
    model: Optional[str] = typer.Option(None, "--model", help="Answer model (name, path, or remote model)."),
    judge_backend: Optional[str] = typer.Option(None, "--judge-backend", help="Judge backend kind (default: the answer backend's)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model: answers are generated and judged on each rubric. Without it: retrieval only."),
) -> None:
    """Run BEAM: evidence recall@5/@10 per ability for each retriever, token counts, and with --judge-model rubric scores.

    Example: memstream bench beam --data BEAM/chats/100K --out runs/beam
    """
    with user_errors():
        if not data.exists():
            raise CliError(f"{data}: no such file or folder")
        from memstream.benchmarks.commands import beam_run

        results = beam_run(
            data, out, systems=system, limit=limit, backend=backend, model=model, judge_backend=judge_backend,
            judge_model=judge_model, progress=lambda message: typer.echo(message, err=True),
        )
        if results["mode"] == "retrieval-only":
            typer.echo("no --judge-model: retrieval and model-free metrics only, no answers scored")
        for name, summary in results["systems"].items():
            judged = f"  judge {summary['judge']}" if "judge" in summary else ""
            typer.echo(
                f"{name:<10} recall_any@5 {summary['recall_any@5']:.3f}  recall_any@10 {summary['recall_any@10']:.3f}  "
                f"evidence tokens {summary['evidence_tokens']}{judged}"
            )
        typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")


@bench_app.command("report")
def bench_report(run_dir: Path = typer.Argument(..., help="A run directory (holds predictions.jsonl).")) -> None:
    """Rebuild results.json, report.md and the plots of a run from its predictions.

    Example: memstream bench report runs/locomo
    """
    with user_errors():
        from memstream.benchmarks.commands import summary_lines
        from memstream.benchmarks.report import write_reports

        for line in summary_lines(write_reports(run_dir)):
            typer.echo(line)


def _bench_locomo_retrieval(data: Path, out: Path, limit, categories, systems, ablation: bool) -> None:
    from memstream.benchmarks.retrieval_eval import evaluate_locomo_retrieval, write_results

    try:
        codes = [int(c) for c in categories.split(",") if c.strip()] if categories else None
    except ValueError:
        raise CliError(f"--categories takes numbers 1-5 separated by commas, got {categories!r}") from None
    settings = settings_from(None)
    results, rows = evaluate_locomo_retrieval(
        data, settings, out / "work", limit=limit, categories=codes, systems=systems, ablation=ablation,
        progress=lambda message: typer.echo(message, err=True),
    )
    write_results(results, rows, out)
    for name, summary in results["systems"].items():
        typer.echo(
            f"{name:<10} recall_any@10 {summary['recall_any@10']:.3f}  recall_all@10 {summary['recall_all@10']:.3f}  "
            f"p50 {summary['latency_ms_p50']:.1f} ms"
        )
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
