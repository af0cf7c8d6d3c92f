"""What is stored, summed up: a user's conversations with their turn and session counts, and the row counts behind
`memstream stats`, the TUI's conversation list and the server's health answer. Cold reads, kept apart from the
store's write and hot read paths; `read` is the store's reader (MemoryStore._read: its pool, retried once on a
dropped connection)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select

from memstream.memory import schema
from memstream.memory.validate import MAX_TIME, MIN_TIME

Read = Callable[[Any], list]


@dataclass
class ConversationInfo:
    conversation_id: str
    turns: int
    sessions: int
    first_time: datetime | None
    last_time: datetime | None


def conversations(read: Read, user_id: str) -> list[ConversationInfo]:
    turn_rows = read(
        select(
            schema.turns.c.conversation_id,
            func.count(),
            func.min(schema.turns.c.event_time),
            func.max(schema.turns.c.event_time),
            func.min(schema.turns.c.id),
        )
        .where(schema.turns.c.user_id == user_id)
        .group_by(schema.turns.c.conversation_id)
    )
    session_counts = dict(
        read(
            select(schema.sessions.c.conversation_id, func.count())
            .where(schema.sessions.c.user_id == user_id)
            .group_by(schema.sessions.c.conversation_id)
        )
    )
    infos = {
        row[0]: ConversationInfo(row[0], row[1], session_counts.get(row[0], 0), row[2], row[3]) for row in turn_rows
    }
    # Conversations with sessions but no turns yet still exist.
    for conversation_id, count in session_counts.items():
        infos.setdefault(conversation_id, ConversationInfo(conversation_id, 0, count, None, None))
    return sorted(infos.values(), key=lambda c: c.conversation_id)


def users(read: Read) -> list[str]:
    return [row[0] for row in read(select(schema.sessions.c.user_id).distinct().order_by(schema.sessions.c.user_id))]


def stats(read: Read, user_id: str | None, *, backend: str, sqlite_path: Path | None) -> dict[str, Any]:
    def count(table):
        statement = select(func.count()).select_from(table)
        if user_id is not None:
            statement = statement.where(table.c.user_id == user_id)
        return read(statement)[0][0]

    result: dict[str, Any] = {
        "backend": backend,
        "turns": count(schema.turns),
        "sessions": count(schema.sessions),
        "facts": count(schema.facts),
    }
    # Rows no index can hold (written before validation existed, or by hand): the indexer skips them.
    outside = select(func.count()).select_from(schema.turns).where(
        (schema.turns.c.event_time < MIN_TIME) | (schema.turns.c.event_time > MAX_TIME))
    if user_id is not None:
        outside = outside.where(schema.turns.c.user_id == user_id)
    result["unindexable_turns"] = read(outside)[0][0]
    if user_id is None:
        result["users"] = len(users(read))
    else:
        result["user"] = user_id
        result["conversations"] = len(conversations(read, user_id))
    if sqlite_path is not None and sqlite_path.exists():
        result["database_bytes"] = sum(p.stat().st_size for p in sqlite_path.parent.glob(sqlite_path.name + "*"))
    return result
