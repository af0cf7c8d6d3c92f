"""What a search returns: small result objects with the scores and provenance the inspector and benchmarks show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memstream.memory.model import Turn
from memstream.retrieval.timeparse import TimeWindow


@dataclass
class Hit:
    turn: Turn
    dense_score: float | None
    """Best cosine similarity of any of this turn's keys (None: no dense list found it)."""
    lexical_score: float | None
    """Best BM25 score of any of this turn's keys."""
    fused_score: float
    rank: int
    matched_via: str
    """Which key found it best: turn, round, statement, fact (or time: a time-restricted list)."""

    @property
    def event_time(self) -> datetime:
        return self.turn.event_time

    @property
    def session_id(self) -> int | None:
        return self.turn.session_id

    @property
    def source_id(self) -> str | None:
        return self.turn.source_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "turn_id": self.turn.id,
            "source_id": self.source_id,
            "session_id": self.session_id,
            "conversation_id": self.turn.conversation_id,
            "event_time": self.event_time.isoformat(),
            "speaker": self.turn.speaker,
            "role": self.turn.role,
            "text": self.turn.text,
            "fused_score": self.fused_score,
            "dense_score": self.dense_score,
            "lexical_score": self.lexical_score,
            "matched_via": self.matched_via,
        }


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    time_window: TimeWindow | None = None
    mode: str = "memstream"
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage (embed, dense, lexical, fuse, fetch, total)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": self.mode,
            "time_window": self.time_window.to_dict() if self.time_window else None,
            "timings_ms": self.timings,
            "hits": [hit.to_dict() for hit in self.hits],
        }


@dataclass
class SessionHit:
    session_id: int | None
    score: float
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "score": self.score, "turn_ids": [h.turn.id for h in self.hits]}
