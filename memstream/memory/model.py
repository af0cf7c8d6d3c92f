"""The data model: what memstream remembers. Plain dataclasses; the store maps them to rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Turn:
    id: int
    user_id: str
    conversation_id: str
    session_id: int | None
    role: str
    speaker: str | None
    text: str
    event_time: datetime
    """When it was said (from the data, or the clock when live)."""
    ingested_at: datetime
    """When memstream stored it."""
    position: int = 0
    """Order within its session."""
    pinned: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None
    embedding: bytes | None = field(default=None, repr=False, compare=False)
    """float32 vector bytes, loaded only for index builds."""

    @property
    def source_id(self) -> str | None:
        """The dataset's own id for this turn (LoCoMo dia_id, LongMemEval session:index), if any."""
        return self.metadata.get("source_id")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("embedding")
        data["event_time"] = self.event_time.isoformat()
        data["ingested_at"] = self.ingested_at.isoformat()
        return data


@dataclass
class Session:
    id: int
    user_id: str
    conversation_id: str
    started_at: datetime | None
    external_id: str | None = None
    summary: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fact:
    id: int
    user_id: str
    conversation_id: str | None
    subject: str
    """What the fact is about, normalised ("user.job", "caroline.address"); a newer fact on the same subject closes this one."""
    text: str
    source_turn_ids: list[int]
    valid_from: datetime
    valid_to: datetime | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_current(self) -> bool:
        return self.valid_to is None


@dataclass
class NewTurn:
    """A turn about to be stored (no id yet)."""

    role: str
    text: str
    speaker: str | None = None
    event_time: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewSession:
    """A session about to be stored, with its turns: stored in one transaction."""

    conversation_id: str
    turns: list[NewTurn]
    started_at: datetime | None = None
    external_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
