"""The memory side of one server process: store, retriever, agent, and the index refresh.

Scale-out rule: nothing the server needs lives only in this process. The database is the
truth; the retriever's index is a per-process cache that `sync()` catches up with turns and
tombstones written by any process. Each process syncs
- before every search and memory chat (so a turn committed anywhere is found by the next
  search everywhere), and
- in the background every `server.index_refresh_s` seconds (so that catching up, which embeds
  other processes' turns, mostly happens off the request path).

The retriever's on-disk cache is shared by path (beside a SQLite file, or keyed by the database
URL), so two processes writing it would corrupt it: a process uses it only while it holds an
exclusive lock on it; any other process keeps its index in memory and rebuilds it from the
stored embeddings on start (no re-embedding).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError

from memstream.agent.controller import MemoryAgent
from memstream.backends.base import ChatBackend
from memstream.config import Settings
from memstream.memory.store import MemoryStore, StoreError
from memstream.retrieval.embedder import EmbedderCache
from memstream.retrieval.retriever import Retriever, cache_dir_for

log = logging.getLogger(__name__)


def claim_cache_dir(path: Path | None) -> tuple[Path | None, IO | None]:
    """(path, lock handle) when this process may persist the index cache at `path`, else (None, None)."""
    if path is None:
        return None, None
    try:
        import fcntl
    except ImportError:  # no flock (Windows): never share a cache between server processes
        return None, None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.parent / f"{path.name}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        log.info("index cache %s is used by another process: this one keeps its index in memory", path)
        return None, None
    return path, handle


class MemoryService:
    """Opened once per process (blocking: loads the embedder, catches the index up)."""

    def __init__(self, settings: Settings, backend: ChatBackend, embedders: EmbedderCache | None = None):
        self.settings = settings
        store = MemoryStore.from_settings(settings)
        try:
            cache_dir, self._cache_lock = claim_cache_dir(cache_dir_for(settings, store))
            self.retriever = Retriever.from_settings(settings, store, embedders=embedders, sync=False, cache_dir=cache_dir)
        except BaseException:
            store.close()
            raise
        self.store = store
        self.agent = MemoryAgent(store, self.retriever, backend, settings)
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.synced_through: dict[str, int] = {}
        self.sync()

    def sync(self) -> int:
        """Catch the index up with the database; returns how many rows were newly indexed."""
        try:
            through = self.store.max_ids()  # read first: everything up to here is indexed once sync returns
            indexed = self.retriever.sync(save=False)
        except (StoreError, SQLAlchemyError) as exc:
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
        except (StoreError, SQLAlchemyError) as exc:
            details["database"] = f"unreachable: {exc}"
            return False, details
        details["index"] = {
            "last_sync_age_s": None if self.last_sync is None else round(time.monotonic() - self.last_sync, 3),
            "turns_behind": max(0, current["turn"] - self.synced_through.get("turn", 0)),
            "error": self.last_error,
        }
        return self.last_error is None and self.last_sync is not None, details

    async def refresh_forever(self, stop: asyncio.Event) -> None:
        """Sync every index_refresh_s seconds until `stop` is set; failures are logged and shown by /ready."""
        interval = self.settings.server.index_refresh_s
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.sync)
            except (StoreError, SQLAlchemyError) as exc:
                log.warning("index refresh failed (will retry in %ss): %s", interval, exc)

    def close(self) -> None:
        self.agent.close()  # waits for queued enrichment, saves the cache when this process owns it
        self.store.close()
        if self._cache_lock is not None:
            self._cache_lock.close()
