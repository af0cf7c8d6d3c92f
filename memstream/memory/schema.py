"""Tables and migrations. Migrations are ordered, named steps recorded in `schema_migrations`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(200), nullable=False),
    Column("conversation_id", String(200), nullable=False),
    Column("external_id", String(200)),
    Column("started_at", DateTime),
    Column("summary", Text),
    Column("metadata", JSON, nullable=False, default=dict),
    Index("ix_sessions_user_conv", "user_id", "conversation_id"),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(200), nullable=False),
    Column("conversation_id", String(200), nullable=False),
    Column("session_id", Integer, ForeignKey("sessions.id", ondelete="CASCADE")),
    Column("position", Integer, nullable=False, default=0),
    Column("role", String(20), nullable=False),
    Column("speaker", String(200)),
    Column("text", Text, nullable=False),
    Column("event_time", DateTime, nullable=False),
    Column("ingested_at", DateTime, nullable=False),
    Column("pinned", Boolean, nullable=False, default=False),
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200)),
    Column("metadata", JSON, nullable=False, default=dict),
    Index("ix_turns_user_conv", "user_id", "conversation_id", "id"),
    Index("ix_turns_user_time", "user_id", "event_time"),
    Index("ix_turns_session_user", "session_id", "user_id", "id"),
)

facts = Table(
    "facts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(200), nullable=False),
    Column("conversation_id", String(200)),
    Column("subject", String(300), nullable=False),
    Column("text", Text, nullable=False),
    Column("source_turn_ids", JSON, nullable=False, default=list),
    Column("valid_from", DateTime, nullable=False),
    Column("valid_to", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200)),
    Column("metadata", JSON, nullable=False, default=dict),
    Index("ix_facts_user_subject", "user_id", "subject"),
    Index("ix_facts_user_id", "user_id", "id"),
)

# Tombstones let index caches in other processes catch up with deletes (forget, delete turn).
deletions = Table(
    "deletions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(200), nullable=False),
    Column("kind", String(10), nullable=False),  # "turn" | "fact"
    Column("item_id", Integer, nullable=False),
    Column("deleted_at", DateTime, nullable=False),
)


def _initial(conn: Connection) -> None:
    for table in (sessions, turns, facts, deletions):
        table.create(conn, checkfirst=True)


def _id_order_indexes(conn: Connection) -> None:
    # A session's turns in id order (the last few before a turn, or those after it), their count, and a user's
    # facts above an id, read through an index alone (every query also filters on user_id): catching an index
    # up or refreshing a summary then costs the same in a long session as in a short one. The session index
    # replaces the one on session_id, its prefix (which deleting a session still needs for its foreign key).
    for table, name in ((turns, "ix_turns_session_user"), (facts, "ix_facts_user_id")):
        next(i for i in table.indexes if i.name == name).create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_turns_session"))


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("001_initial", _initial),
    ("002_id_order_indexes", _id_order_indexes),
]


SCHEMA_LOCKS = {"store": 7263011, "index": 7263012, "idempotency": 7263013}
"""PostgreSQL advisory lock ids, one per schema that a process creates on first open."""


def lock_schema(conn: Connection, schema: str) -> None:
    """Several processes may open a fresh PostgreSQL database at once: one creates `schema`, the others wait here
    until its transaction commits. SQLite needs nothing: its writers already take the database lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": SCHEMA_LOCKS[schema]})


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations this database lacks, in order; return their names."""
    lock_schema(conn, "store")
    schema_migrations.create(conn, checkfirst=True)
    done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        step(conn)
        conn.execute(schema_migrations.insert().values(name=name, applied_at=datetime.now(timezone.utc).replace(tzinfo=None)))
        applied.append(name)
    return applied
