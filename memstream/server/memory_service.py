"""The memory side of one server process: the `Memory`, the agent, and the index refresh.

Scale-out rule: nothing the server needs lives only in this process. The database is the
truth. On PostgreSQL with pgvector the index lives in the database too (retrieval/pg_index.py): a
committed turn is searchable from every process at once and nothing below runs. Otherwise (SQLite, or
retrieval.index_backend = 'memory') the memory's index is a per-process cache that `Memory.refresh()`
catches up with turns and tombstones written by any process. Each process then refreshes
- before every search and memory chat (so a turn committed anywhere is found by the next
  search everywhere), and
- in the background every `server.index_refresh_s` seconds (so that catching up mostly happens
  off the request path; new vectors are embedded by the memory's background indexer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from memstream.agent.controller import MemoryAgent
from memstream.backends.base import ChatBackend
from memstream.config import Settings, usable_cores
from memstream.errors import MemstreamError
from memstream.memory.core import open_memory
from memstream.retrieval.embedder import EmbedderCache
from memstream.server.single_flight import SingleFlight

log = logging.getLogger(__name__)


class MemoryService:
    """Opened once per process (blocking: loads the embedder, catches the index up)."""

    def __init__(self, settings: Settings, backend: ChatBackend, embedders: EmbedderCache | None = None):
        self.settings = settings
        self.memory = open_memory(settings, embedders=embedders, sync=False)
        self.store = self.memory.store
        self.agent = MemoryAgent(self.memory, backend, settings)
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.synced_through: dict[str, int] = {}
        self._sync_flight = SingleFlight(self._sync_now)
        # Searches and listings waiting for a thread wait here, on the event loop (server.search_threads).
        self.read_gate = asyncio.Semaphore(settings.server.search_threads or usable_cores())
        self.sync()

    def sync(self) -> int:
        """Catch the index up with the database (everything committed before the call); returns rows newly indexed.

        Concurrent callers share runs (see SingleFlight): under load, one catch-up serves every request
        that arrived before it started, instead of each request reading the database again."""
        return self._sync_flight()

    def _sync_now(self) -> int:
        if self.memory.index_in_database:
            # pgvector index: every committed turn is already searchable here; there is nothing to catch up. Only the
            # first call (at start) indexes rows that have no keys (a database from before the index existed).
            indexed = self.memory.retriever.sync() if self.last_sync is None else 0
            self.last_sync = time.monotonic()
            return indexed
        try:
            through = self.store.max_ids()  # read first: everything up to here is indexed once sync returns
            indexed = self.memory.refresh(through)
        except MemstreamError as exc:
            self.last_error = f"index sync failed: {exc}"
            raise
        self.synced_through = through
        self.last_sync = time.monotonic()
        self.last_error = None
        return indexed

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): the database answers and the last index sync succeeded."""
        details: dict[str, Any] = {"index_refresh_s": self.settings.server.index_refresh_s}
        try:
            current = self.store.max_ids()
            details["database"] = "ok"
        except MemstreamError as exc:
            details["database"] = f"unreachable: {exc}"
            return False, details
        details["index"] = {
            "last_sync_age_s": None if self.last_sync is None else round(time.monotonic() - self.last_sync, 3),
            "turns_behind": 0 if self.memory.index_in_database else max(0, current["turn"] - self.synced_through.get("turn", 0)),
            "in_database": self.memory.index_in_database,
            "error": self.last_error,
            **self.memory.stats()["index"],
        }
        return self.last_error is None and self.last_sync is not None, details

    async def refresh_forever(self, stop: asyncio.Event) -> None:
        """Sync every index_refresh_s seconds until `stop` is set; failures are logged and shown by /ready."""
        interval = self.settings.server.index_refresh_s
        # The database index needs no catch-up, only the round keys a paused conversation left without a vector.
        work = self.memory.refresh if self.memory.index_in_database else self.sync
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(work)
            except MemstreamError as exc:
                log.warning("index refresh failed (will retry in %ss): %s", interval, exc)

    def close(self) -> None:
        self.agent.close()  # waits for queued enrichment
        self.memory.close()  # drains the indexer, saves the cache when this process owns it
