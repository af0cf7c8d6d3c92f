"""Pieces every `memstream` command shares: the common options, the user-error wrapper, and the openers and printers.

Kept apart from the command modules so that `cli.py` and `cli_bench.py` can both use them without importing each other.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

import typer

from memstream.config import ConfigError, Settings, load_settings

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
