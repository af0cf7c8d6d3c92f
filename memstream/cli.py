"""The `memstream` command: thin wrappers that parse options, call the library, and print.

Every command turns the library's typed errors into a one-line message and exit code 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from memstream.config import ConfigError, ConfigWarning, Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="memstream: long-term memory for chat agents.")
memory_app = typer.Typer(no_args_is_help=True, help="Inspect and manage stored memories.")
models_app = typer.Typer(no_args_is_help=True, help="Chat models memstream can find.")
bench_app = typer.Typer(no_args_is_help=True, help="Reproducible benchmark runs (LoCoMo, LongMemEval).")
app.add_typer(memory_app, name="memory")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")

DbOption = typer.Option(None, "--db", help="Database URL (default: SQLite in the user data dir; or MEMSTREAM_DB_URL).")
UserOption = typer.Option(..., "--user", "-u", help="Whose memory.")
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from memstream.backends.base import BackendError
    from memstream.memory.importers import ImportFormatError
    from memstream.errors import MemstreamError

    errors: list[type[BaseException]] = [CliError, ConfigError, MemstreamError, ImportFormatError, BackendError, FileNotFoundError, ValueError]
    try:
        from memstream.retrieval.errors import RetrievalError

        errors.append(RetrievalError)
    except ImportError:  # retrieval not installed in a trimmed build
        pass
    return tuple(errors)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except _user_errors() as exc:
        message = str(exc) if str(exc) else type(exc).__name__
        typer.echo(f"Error: {message.splitlines()[0]}", err=True)
        raise typer.Exit(2) from None


def settings_from(db: str | None = None, **overrides) -> Settings:
    return load_settings(db_url=db, **overrides)


def open_store(settings: Settings, index: bool = False, embed: bool = False):
    """The memory, opened for what a command needs: rows only (list, stats, export), the index without the
    embedder (forget: deletes reach the index cache), or everything (search, ingest --embed)."""
    from memstream.memory.core import open_memory

    return open_memory(settings, index=index or embed, load_embedder=embed, background=False)


def parse_when(value: str | None) -> datetime | None:
    """--at values: ISO dates, or anything dateparser reads ("2023-05-08 14:00", "8 May 2023")."""
    if value is None:
        return None
    from memstream.retrieval.timeparse import parse_datetime

    parsed = parse_datetime(value)
    if parsed is None:
        raise CliError(f"cannot parse date/time {value!r} (try ISO format, e.g. 2023-05-08T14:00)")
    return parsed


def echo_json(data) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, default=str, indent=2))


# -- ingest / memory ---------------------------------------------------------------------


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="A LoCoMo JSON, LongMemEval JSON or JSONL chat log."),
    user: str = UserOption,
    fmt: str = typer.Option("auto", "--format", "-f", help="auto|locomo|longmemeval|jsonl"),
    embed: bool = typer.Option(False, "--embed", help="Also embed and index now (otherwise done on first search)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip sessions of the file already stored (an interrupted run)."),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a conversation history into a user's memory.

    Example: memstream ingest locomo10.json --user alice
    """
    from memstream.memory.importers import load_file
    from memstream.memory.store import check_id

    with user_errors():
        check_id("user id", user)
        sessions = load_file(path, fmt)  # parse everything first: a bad file writes nothing
        settings = settings_from(db)
        with open_store(settings, embed=embed) as memory, _progress(sum(len(s.turns) for s in sessions), as_json) as advance:
            results = memory.ingest(user, sessions, resume=resume, progress=advance)
        counts = {
            "user": user,
            "conversations": len({s.conversation_id for s in sessions}),
            "sessions": len(results),
            "turns": sum(len(ids) for _, ids in results),
        }
        if embed:
            counts["indexed"] = counts["turns"]
        if as_json:
            echo_json(counts)
        else:
            typer.echo(
                f"ingested {counts['turns']} turns in {counts['sessions']} sessions "
                f"({counts['conversations']} conversations) for user {user}"
            )


@memory_app.command("list")
def memory_list(
    user: str = UserOption,
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c"),
    limit: int = typer.Option(50, "--limit", "-n", min=1),
    offset: int = typer.Option(0, "--offset", min=0),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """List a user's turns (oldest first).

    Example: memstream memory list --user alice --conversation conv-26 --json
    """
    with user_errors():
        store = open_store(settings_from(db))
        store.require_user(user)
        turns = store.list_turns(user, conversation, limit=limit, offset=offset)
        if as_json:
            echo_json([t.to_dict() for t in turns])
            return
        for t in turns:
            who = t.speaker or t.role
            typer.echo(f"{t.id:>7}  {t.event_time:%Y-%m-%d %H:%M}  {t.conversation_id}  {who}: {t.text[:100]}")


@memory_app.command("export")
def memory_export(user: str = UserOption, db: Optional[str] = DbOption) -> None:
    """Write a user's memory as JSONL to stdout.

    Example: memstream memory export --user alice > alice.jsonl
    """
    with user_errors():
        store = open_store(settings_from(db))
        store.require_user(user)
        for record in store.export_user(user):
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@memory_app.command("import")
def memory_import(path: Path = typer.Argument(..., help="A JSONL file from `memory export`."), user: str = UserOption, db: Optional[str] = DbOption) -> None:
    """Load an exported JSONL file into a user's memory (all or nothing).

    Example: memstream memory import alice.jsonl --user alice2
    """
    with user_errors():
        if not path.exists():
            raise CliError(f"{path}: no such file")
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CliError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
        store = open_store(settings_from(db))
        counts = store.import_records(user, records)
        typer.echo(f"imported {counts['turns']} turns, {counts['sessions']} sessions, {counts['facts']} facts for user {user}")


@memory_app.command("forget")
def memory_forget(
    user: str = UserOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    db: Optional[str] = DbOption,
) -> None:
    """Delete every memory of one user (and nothing else).

    Example: memstream memory forget --user alice --yes
    """
    with user_errors():
        settings = settings_from(db)
        store = open_store(settings)
        store.require_user(user)
        if not yes and not typer.confirm(f"Delete all memories of user {user!r}?"):
            raise CliError("aborted; nothing deleted")
        store.close()
        with open_store(settings, index=True) as memory:
            counts = memory.forget_user(user)
        typer.echo(f"forgot user {user}: {counts['turns']} turns, {counts['sessions']} sessions, {counts['facts']} facts")


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator:
    """A rich progress bar over `total` turns (stderr); `advance(done)` moves it. Silent with --json."""
    if quiet or total < 200:
        yield lambda done: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("ingesting", total=total)
        yield lambda done: bar.update(task, completed=done)


@memory_app.command("stats")
def memory_stats(user: Optional[str] = typer.Option(None, "--user", "-u"), db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Counts of users, sessions, turns and facts, and the database size.

    Example: memstream memory stats --json
    """
    with user_errors():
        store = open_store(settings_from(db))
        if user is not None:
            store.require_user(user)
        stats = store.stats(user)
        if as_json:
            echo_json(stats)
        else:
            for key, value in stats.items():
                typer.echo(f"{key}: {value}")


@memory_app.command("search")
def memory_search(
    query: str = typer.Argument(..., help="What to look for."),
    user: str = UserOption,
    k: int = typer.Option(10, "-k", help="How many results."),
    at: Optional[str] = typer.Option(None, "--at", help="The question's date, for relative time expressions."),
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c"),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Hybrid (dense + BM25, time-aware) search over a user's memory.

    Example: memstream memory search "charity race" --user alice -k 5 --at 2023-06-01
    """
    from memstream.retrieval.retriever import check_search_args

    with user_errors():
        settings = settings_from(db)
        with open_store(settings) as store:
            store.require_user(user)
        when = parse_when(at)  # bad input fails before the model loads
        check_search_args(query, k)
        with open_store(settings, embed=True) as memory:
            result = memory.search(user, query, k=k, now=when, conversation=conversation)
        if as_json:
            echo_json(result.to_dict())
            return
        if result.time_window:
            typer.echo(f"time window: {result.time_window}")
        for hit in result.hits:
            typer.echo(f"{hit.fused_score:.4f}  {hit.turn.event_time:%Y-%m-%d %H:%M}  [{hit.source_id or hit.turn.id}]  {hit.turn.text[:110]}")


# -- agent ---------------------------------------------------------------------------


@memory_app.command("reembed")
def memory_reembed(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Re-embed every turn and fact with the configured embedder (after changing embedder.model).

    Example: MEMSTREAM_EMBEDDER__MODEL=/models/bge-small memstream memory reembed
    """
    from memstream.memory.index_files import reembed
    from memstream.retrieval.embedder import EmbedderCache

    with user_errors():
        settings = settings_from(db)
        store = open_store(settings)
        e = settings.embedder
        counts = reembed(settings, store.store, EmbedderCache().for_settings(e))
        if as_json:
            echo_json(counts)
        else:
            typer.echo(f"re-embedded {counts['turns']} turns and {counts['facts']} facts with {settings.embedder.model}")


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
        from memstream.benchmarks.commands import full_run, summary_lines

        results = full_run(
            "locomo", data, out, systems=system, limit=limit, categories=categories, backend=backend,
            judge_backend=judge_backend, judge_model=judge_model, concurrency=concurrency, resume=resume,
            per_history=per_conversation, model=model,
        )
        for line in summary_lines(results):
            typer.echo(line)
        typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'} and plots")


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
        from memstream.benchmarks.commands import full_run, summary_lines

        results = full_run(
            "longmemeval", data, out, systems=system, limit=limit, categories=categories, backend=backend, model=model,
            judge_backend=judge_backend, judge_model=judge_model, concurrency=concurrency, resume=resume,
        )
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


def build_agent(settings: Settings):
    """The model loads in a background thread while the memory opens (the first answer waits for it)."""
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.models import make_backend

    return MemoryAgent.from_settings(settings, backend=make_backend(settings.backend, settings.attention, background=True))


def backend_overrides(backend: str | None, model: str | None, base_url: str | None = None, attention: str | None = None) -> dict:
    return {"backend.kind": backend, "backend.model": model, "backend.base_url": base_url, "attention.policy": attention}


@app.command()
def ask(
    question: str = typer.Argument(..., help="One message to the agent."),
    user: str = UserOption,
    conversation: str = typer.Option("default", "--conversation", "-c"),
    at: Optional[str] = typer.Option(None, "--at", help="When the question is asked (default: now)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local | openai"),
    model: Optional[str] = typer.Option(None, "--model"),
    base_url: Optional[str] = typer.Option(None, "--base-url"),
    remember: bool = typer.Option(True, "--remember/--no-remember", help="Store the question and answer."),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Ask one question; the answer uses the user's memory.

    Example: memstream ask "When did Caroline go to the support group?" --user alice --json
    """
    from memstream.agent.controller import AgentError, TurnOptions

    with user_errors():
        settings = settings_from(db, **backend_overrides(backend, model, base_url))
        when = parse_when(at)
        agent = build_agent(settings)
        try:
            reply = agent.chat(question, user=user, conversation=conversation, at=when, options=TurnOptions(remember=remember))
        except AgentError as exc:
            agent.close()
            raise CliError(str(exc)) from None
        agent.close()
        if as_json:
            echo_json(reply.to_dict())
        else:
            typer.echo(reply.text)


@app.command()
def chat(
    user: str = typer.Option("me", "--user", "-u"),
    conversation: str = typer.Option("default", "--conversation", "-c"),
    backend: Optional[str] = typer.Option(None, "--backend", help="local | openai"),
    model: Optional[str] = typer.Option(None, "--model"),
    base_url: Optional[str] = typer.Option(None, "--base-url"),
    plain: bool = typer.Option(False, "--plain", help="A line-based REPL instead of the terminal app."),
    db: Optional[str] = DbOption,
) -> None:
    """Chat with memory: the terminal app, or a plain REPL with --plain.

    Example: memstream chat --user alice
    """
    with user_errors():
        settings = settings_from(db, **backend_overrides(backend, model, base_url))
        if not plain:
            from memstream.tui.app import run_app

            run_app(settings, user=user, conversation=conversation)
            return
        agent = build_agent(settings)
        _plain_repl(agent, user, conversation)


def _plain_repl(agent, user: str, conversation: str) -> None:
    from memstream.agent.controller import AgentError, Reply

    typer.echo(f"memstream chat as {user!r} in {conversation!r}. /quit to leave.")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                break
            if line.strip() in ("/quit", "/exit"):
                break
            if not line.strip():
                continue
            sys.stdout.write("bot> ")
            try:
                for item in agent.stream(line, user=user, conversation=conversation):
                    if isinstance(item, Reply):
                        sys.stdout.write(f"\n   ({len(item.memories)} memories, {item.timings.get('total', 0):.1f}s)\n")
                    else:
                        sys.stdout.write(item)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                sys.stdout.write("\n[cancelled]\n")
            except AgentError as exc:
                sys.stdout.write(f"\nError: {exc}\n")
    finally:
        agent.close()


# -- models / serve ------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: bool = JsonOption) -> None:
    """Chat models memstream can find (installed packages, configured paths); * marks the default.

    Example: memstream models list
    """
    from dataclasses import asdict

    from memstream.backends.models import list_models

    with user_errors():
        rows = list_models(settings_from())
        if as_json:
            echo_json([asdict(row) for row in rows])
            return
        for row in rows:
            mark = "*" if row.default else " "
            status = "" if row.available else "  [not installed]"
            typer.echo(f"{mark} {row.name:<28} {row.source:<24} {row.location}{status}")


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1; others need --api-key)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8765)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY'."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local | openai"),
    model: Optional[str] = typer.Option(None, "--model", help="A name from `memstream models list` or a path."),
    base_url: Optional[str] = typer.Option(None, "--base-url"),
    attention: Optional[str] = typer.Option(None, "--attention", help="dense | sink_window | block_topk | snapkv"),
    db: Optional[str] = DbOption,
) -> None:
    """Run the OpenAI-compatible HTTP server (POST /v1/chat/completions, GET /v1/models, GET /health).

    Example: memstream serve --port 8000 --model smollm2-135m-instruct
    """
    from memstream.server.app import check_bind
    from memstream.server.app import serve as run_server

    with user_errors():
        overrides = backend_overrides(backend, model, base_url, attention)
        if api_key:
            overrides["server.api_keys"] = {api_key: "default"}
        settings = settings_from(db, **overrides)
        check_bind(settings, host or settings.server.host)  # fail before loading the model
        from memstream.backends.models import make_backend

        # The model loads while the memory opens and uvicorn starts; requests wait for it, /health answers at once.
        server = settings.server
        run_server(settings, host, port, backend=make_backend(settings.backend, settings.attention, background=True,
                                                             own_process=server.model_process, threads=server.model_threads))


@app.command()
def mcp(
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Whose memory the tools serve (default: mcp.user, 'me')."),
    transport: str = typer.Option("stdio", "--transport", "-t", help="stdio (desktop clients) | http (streamable HTTP)."),
    host: Optional[str] = typer.Option(None, "--host", help="HTTP: interface to bind (default 127.0.0.1; others need --api-key)."),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP: port (default 8766)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="HTTP: require 'Authorization: Bearer KEY' (or set server.api_keys)."),
    db: Optional[str] = DbOption,
) -> None:
    """Serve memory to MCP clients: tools remember, search_memory, list_memories, forget_memory, forget_user.

    Example: memstream mcp --user alice
    """
    with user_errors():
        try:
            from memstream.mcp import run_http, run_stdio
        except ImportError as exc:
            raise CliError(f"memstream mcp needs the mcp extra: pip install 'memstream[mcp]' ({exc})") from None
        overrides = {"server.api_keys": {api_key: "default"}} if api_key else {}
        settings = settings_from(db, **overrides)
        if transport == "stdio":
            run_stdio(settings, user)
        elif transport == "http":
            run_http(settings, user, host, port)
        else:
            raise CliError(f"--transport must be stdio or http, got {transport!r}")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, ConfigWarning):
        return f"Warning: {message}\n"  # for the user, not a developer: no file and line
    return _PYTHON_FORMAT_WARNING(message, category, filename, lineno, line)


_PYTHON_FORMAT_WARNING = warnings.formatwarning


def main() -> None:
    warnings.formatwarning = _format_warning
    app()


if __name__ == "__main__":
    main()
