"""The `memstream` command: thin wrappers that parse options, call the library, and print.

Every command turns the library's typed errors into a one-line message and exit code 2.
The shared options and that error handling live in cli_common.py; the `bench` sub-app in cli_bench.py.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from memstream.cli_bench import bench_app
from memstream.cli_common import (
    CliError,
    DbOption,
    JsonOption,
    UserOption,
    echo_json,
    open_store,
    parse_when,
    settings_from,
    user_errors,
)
from memstream.config import ConfigWarning, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="memstream: long-term memory for chat agents.")
memory_app = typer.Typer(no_args_is_help=True, help="Inspect and manage stored memories.")
models_app = typer.Typer(no_args_is_help=True, help="Chat models memstream can find.")
app.add_typer(memory_app, name="memory")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


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
    from memstream.retrieval.search_args import check_search_args

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


# -- agent ---------------------------------------------------------------------------


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
