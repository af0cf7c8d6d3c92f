"""The store's statements on the hot paths (every add, search and chat), built once: building a SQLAlchemy statement
per call cost a third of a search's hit fetch and most of the catch-up check (memory/store.py uses them)."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select

from memstream.memory import schema

TURN_COLUMNS = [column for column in schema.turns.c if column.name != "embedding"]
"""A turn row without its vector: 1.5 KB a row that only index builds read (iter_turns), copied out of every other
read for nothing (a search's hits, a chat's recent turns and neighbours)."""
TURNS_BY_ID = select(*TURN_COLUMNS).where(schema.turns.c.user_id == bindparam("user_id"),
                                          schema.turns.c.id.in_(bindparam("ids", expanding=True)))
"""A search's hits, by id (chunks of at most 900 ids)."""
MAX_IDS = select(
    select(func.coalesce(func.max(schema.turns.c.id), 0)).scalar_subquery(),
    select(func.coalesce(func.max(schema.facts.c.id), 0)).scalar_subquery(),
    select(func.coalesce(func.max(schema.deletions.c.seq), 0)).scalar_subquery(),
)
"""Highest turn id, fact id and deletion seq: every search and every add reads it (the index's catch-up check)."""
# The reads of every add.
LATEST_SESSION = select(func.max(schema.sessions.c.id)).where(
    schema.sessions.c.user_id == bindparam("user_id"), schema.sessions.c.conversation_id == bindparam("conversation_id"))
SESSION_OF_USER = select(schema.sessions.c.id).where(
    schema.sessions.c.id == bindparam("session_id"), schema.sessions.c.user_id == bindparam("user_id"))
LAST_POSITION = (select(schema.turns.c.position)
                 .where(schema.turns.c.session_id == bindparam("session_id"), schema.turns.c.user_id == bindparam("user_id"))
                 .order_by(schema.turns.c.id.desc()).limit(1))
"""The session's newest turn's position: one index probe, not a count over a session that may hold a whole life's
conversation."""
