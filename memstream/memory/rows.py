"""Database rows as the data model's objects (memstream/memory/model.py)."""

from __future__ import annotations

import json
from typing import Any

from memstream.memory.model import Fact, Session, Turn


def new_turn(turn_id: int, row: dict) -> Turn:
    return Turn(id=turn_id, **row)


def turn_of(row, with_embedding: bool = False) -> Turn:
    turn = Turn(
        id=row.id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        session_id=row.session_id,
        role=row.role,
        speaker=row.speaker,
        text=row.text,
        event_time=row.event_time,
        ingested_at=row.ingested_at,
        position=row.position,
        pinned=bool(row.pinned),
        metadata=metadata_of(row.metadata),
        embedding_model=row.embedding_model,
        embedding=row.embedding if with_embedding else None,
    )
    return turn


def session_of(row) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        started_at=row.started_at,
        external_id=row.external_id,
        summary=row.summary,
        metadata=metadata_of(row.metadata),
    )


def fact_of(row) -> Fact:
    return Fact(
        id=row.id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        subject=row.subject,
        text=row.text,
        source_turn_ids=list(row.source_turn_ids or []),
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        created_at=row.created_at,
        metadata=metadata_of(row.metadata),
    )


def metadata_of(value: Any) -> dict[str, Any]:
    # Rows written before validation existed (or by hand) may hold a list or a string: read them as empty rather
    # than failing every read of the user, so one bad row can never take a tenant (or a restart) down.
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}
