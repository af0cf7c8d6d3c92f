"""Opening the database: the SQLAlchemy engine for a URL (SQLite in WAL with BEGIN IMMEDIATE writes, or
PostgreSQL through psycopg), and the store's errors with messages that name the problem."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from memstream.errors import UnavailableError


class StoreError(UnavailableError):
    """The database cannot do what was asked (locked, unreachable, failed); the message names the problem."""


class DatabaseUnavailableError(StoreError):
    """The database URL cannot be opened (bad URL, missing driver, unreachable server, unwritable path)."""


def is_locked(exc: BaseException) -> bool:
    message = str(exc).lower()
    return "database is locked" in message or "database table is locked" in message or "deadlock detected" in message or "could not serialize" in message


def open_engine(url: str, echo: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUnavailableError(f"database URL {url!r} is not a valid URL: {exc}") from exc
    try:
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            pool = {}
            if database and database != ":memory:":
                parent = Path(database).expanduser().parent
                if not parent.exists():
                    raise DatabaseUnavailableError(f"cannot open database {url}: directory {parent} does not exist")
                # More pooled connections than SQLAlchemy's 5: a busy server reads on a dozen threads at once, and
                # each connection past the pool was opened (file, WAL check, pragmas) and closed again per read.
                pool = {"pool_size": 16, "max_overflow": 48}
            engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False}, **pool)
            configure_sqlite(engine)
            return engine
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # No pre-ping (a round trip on every checkout, a dozen per memory chat): reads retry once on a dropped
        # connection (see _read); a write on one fails as StoreError and the emptied pool serves the next.
        return create_engine(parsed, echo=echo, pool_size=10, max_overflow=20)
    except (ImportError, ArgumentError) as exc:
        raise DatabaseUnavailableError(f"cannot open database {redact(url)}: {exc}") from exc
    except Exception as exc:  # SQLAlchemy raises NoSuchModuleError and others for unknown dialects
        if isinstance(exc, DatabaseUnavailableError):
            raise
        raise DatabaseUnavailableError(f"cannot open database {redact(url)}: {first_line(exc)}") from exc


def configure_sqlite(engine: Engine) -> None:
    # SQLAlchemy's documented recipe: emit BEGIN ourselves; writes use BEGIN IMMEDIATE so two writers queue
    # on the busy timeout instead of deadlocking when a read transaction upgrades to a write.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        if options.get("memstream_autocommit"):
            return  # a single-statement read (MemoryStore._read) is its own transaction: BEGIN was a quarter of its cost
        # Other reads take a plain (deferred) BEGIN so they never wait behind another process's write under WAL.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("memstream_write") else "BEGIN")


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"
