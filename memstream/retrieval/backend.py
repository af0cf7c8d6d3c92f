"""The one shape of an index backend, whatever holds it: what `Memory`, the agent, the server and the benchmarks
call. Two implement it: `Retriever` (FAISS + BM25 in each process, a cache caught up from the database; SQLite's
default) and `PgIndex` (pgvector + PostgreSQL full text inside the database; PostgreSQL's default).
`memory/core.py:build_retriever` picks one from the database URL and `retrieval.index_backend`."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from memstream.retrieval.embedder import Embedder
from memstream.retrieval.results import SearchResult, SessionHit
from memstream.retrieval.timeparse import TimeWindow


@runtime_checkable
class IndexBackend(Protocol):
    embedder: Embedder | None
    background: bool
    skipped: dict[str, str]
    """Rows that could not be indexed ("turn 12" -> reason)."""

    def search(
        self, user_id: str, query: str, k: int = 10, now: datetime | None = None, conversation_id: str | None = None,
        time_window: TimeWindow | None = None, mode: str = "memstream", time_mode: str | None = None,
        exclude: Iterable[int] = (),
    ) -> SearchResult: ...

    def search_sessions(self, user_id: str, query: str, k: int = 5, **options) -> list[SessionHit]: ...

    def sync(self, save: bool = True, turns: bool = True) -> int:
        """Index what the database holds and the index lacks; returns how many rows were newly indexed."""
        ...

    def speakers(self, user_id: str) -> set[str]: ...
    def facts_of_turns(self, user_id: str, turn_ids: Iterable[int]) -> tuple[set[int], int]: ...
    def pending(self, user_id: str | None = None) -> int: ...
    def pending_turns(self, user_id: str) -> set[int]: ...
    def wait_until_embedded(self, user_id: str | None, timeout_s: float) -> bool: ...
    def indexed_turns(self, user_id: str) -> int: ...
    def indexed_turns_total(self) -> int: ...
    def prime_query_cache(self, queries: Sequence[str], vectors: np.ndarray) -> None: ...
    def close(self) -> None: ...
