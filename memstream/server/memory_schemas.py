"""Request and response models of the memory REST routes (they are what /openapi.json shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memstream.memory.model import Turn
from memstream.memory.store import MAX_ID_LENGTH
from memstream.memory.validate import MAX_TIME, MIN_TIME
from memstream.retrieval.results import Hit
from memstream.retrieval.search_args import MAX_QUERY_CHARS
from memstream.server.tenancy import MAX_USER_CHARS

MAX_TURNS_PER_ADD = 1000
MAX_PAGE = 500
MAX_SEARCH_K = 100
MAX_TEXT_CHARS = 100_000
MAX_INT64 = 2**63 - 1
"""Offsets and memory ids: what the database can compare (a larger number is a 400, not an overflow)."""
EARLIEST, LATEST = MIN_TIME, MAX_TIME
"""Times a request may name: the store's range (the index compares them as Unix timestamps)."""


def in_range(value: datetime | None) -> datetime | None:
    """`value` as naive UTC, or ValueError when it lies outside EARLIEST..LATEST."""
    if value is None:
        return None
    try:
        naive = value if value.tzinfo is None else (value - value.utcoffset()).replace(tzinfo=None)
    except OverflowError:
        naive = None
    if naive is None or not EARLIEST <= naive <= LATEST:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.date()}..{LATEST.date()}")
    return value

UserName = Field(min_length=1, max_length=MAX_USER_CHARS, description="The memory user, as the client names it.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnIn(_Strict):
    role: Literal["user", "assistant", "system"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    speaker: str | None = Field(None, max_length=MAX_ID_LENGTH)
    time: datetime | None = None
    """When it was said (ISO 8601); default: now."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddMemories(_Strict):
    user: str = UserName
    conversation: str = Field("default", min_length=1, max_length=MAX_ID_LENGTH)
    turns: list[TurnIn] = Field(min_length=1, max_length=MAX_TURNS_PER_ADD)


class Memory(BaseModel):
    """One remembered turn."""

    id: int
    user: str
    conversation: str
    session_id: int | None
    role: str
    speaker: str | None
    text: str
    time: datetime
    """When it was said."""
    ingested_at: datetime
    pinned: bool
    metadata: dict[str, Any]

    @classmethod
    def of(cls, turn: Turn, user: str) -> "Memory":
        return cls(id=turn.id, user=user, conversation=turn.conversation_id, session_id=turn.session_id, role=turn.role,
                   speaker=turn.speaker, text=turn.text, time=turn.event_time, ingested_at=turn.ingested_at,
                   pinned=turn.pinned, metadata=turn.metadata)


class AddedMemories(BaseModel):
    data: list[Memory]


class MemoryPage(BaseModel):
    data: list[Memory]
    has_more: bool
    next_offset: int | None
    """Pass as `offset` for the next page; null on the last page."""


class SearchRequest(_Strict):
    user: str = UserName
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=MAX_SEARCH_K)
    since: datetime | None = None
    """Only memories said at or after this time (with `until`, replaces a window parsed from the query)."""
    until: datetime | None = None
    """Only memories said before this time."""
    at: datetime | None = None
    """When the question is asked: relative dates in the query ("last May") resolve against it. Default: now."""
    conversation: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
    mode: Literal["memstream", "hybrid", "bm25", "dense"] = "memstream"

    _times_in_range = field_validator("since", "until", "at")(in_range)


class SearchHit(BaseModel):
    id: int
    text: str
    time: datetime
    score: float
    """Fused (reciprocal-rank) score; higher is better."""
    dense_score: float | None
    lexical_score: float | None
    source: str
    """Which key found it: turn, round, statement, fact, or time (a time-restricted ranking)."""
    source_id: str | None
    """The dataset's own id for the turn, when it was imported with one."""
    conversation: str
    session_id: int | None
    role: str
    speaker: str | None

    @classmethod
    def of(cls, hit: Hit) -> "SearchHit":
        turn = hit.turn
        return cls(id=turn.id, text=turn.text, time=turn.event_time, score=hit.fused_score, dense_score=hit.dense_score,
                   lexical_score=hit.lexical_score, source=hit.matched_via, source_id=hit.source_id,
                   conversation=turn.conversation_id, session_id=turn.session_id, role=turn.role, speaker=turn.speaker)


class TimeWindowOut(BaseModel):
    start: datetime
    end: datetime
    expression: str


class SearchResponse(BaseModel):
    query: str
    time_window: TimeWindowOut | None
    data: list[SearchHit]


class Deleted(BaseModel):
    id: int
    deleted: bool


class Forgotten(BaseModel):
    user: str
    turns: int
    facts: int
    sessions: int


class Imported(BaseModel):
    user: str
    sessions: int
    turns: int
    facts: int


class MemoryInfo(BaseModel):
    """The `memstream` extension field of a memory-augmented chat completion (OpenAI clients ignore it)."""

    user: str
    conversation: str
    memories: list[SearchHit]
    """The memories placed in the prompt as evidence, best first."""
    plan: dict[str, Any] | None
    """The planner's decision: needs_memory, the rewritten query, time window, reasons."""
    user_turn_id: int | None
    reply_turn_id: int | None
    abstained: bool
