"""Where a database's index cache lives on disk, who may write it, and re-embedding a whole database.

The cache is shared by path (beside a SQLite file, or keyed by the database URL), so two processes writing it
would corrupt it: a process uses it only while it holds an exclusive lock on it; any other process keeps its
index in memory and rebuilds it from the stored embeddings on start (no re-embedding).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import IO

from memstream.memory.store import MemoryStore
from memstream.retrieval import keys as keymod
from memstream.retrieval.embedder import Embedder, recorded_name, to_bytes

log = logging.getLogger(__name__)


def cache_dir_for(settings, store: MemoryStore) -> Path | None:
    """Where the index cache lives: beside a SQLite file, or in the data dir keyed by the database URL."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in recorded_name(settings.embedder.model, settings.embedder.runtime))[-60:]
    path = store.sqlite_path
    if path is not None:
        return path.parent / f"{path.name}.index" / slug
    if store.is_sqlite:  # in-memory SQLite: nothing to persist
        return None
    digest = hashlib.sha1(store.url.encode()).hexdigest()[:16]
    return settings.data_dir / "index" / f"{digest}-{slug}"


def claim_cache_dir(path: Path | None) -> tuple[Path | None, IO | None]:
    """(path, lock handle) when this process may persist the index cache at `path`, else (None, None)."""
    if path is None:
        return None, None
    try:
        import fcntl
    except ImportError:  # no flock (Windows): never share a cache between processes
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


def reembed(settings, store: MemoryStore, embedder: Embedder) -> dict[str, int]:
    """Re-embed every turn and fact with `embedder` and drop the index cache (the next open rebuilds it)."""
    counts = {"turns": 0, "facts": 0}
    batch = []

    def flush() -> None:
        vectors = embedder.embed([keymod.turn_key_text(t) for t in batch])
        store.set_embeddings("turn", {t.id: to_bytes(v) for t, v in zip(batch, vectors)}, embedder.name)
        counts["turns"] += len(batch)
        batch.clear()

    for turn in store.iter_turns():
        batch.append(turn)
        if len(batch) >= 1024:
            flush()
    if batch:
        flush()
    facts = [fact for fact, _blob, _model in store.iter_facts()]
    if facts:
        vectors = embedder.embed([keymod.fact_key_text(f) for f in facts])
        store.set_embeddings("fact", {f.id: to_bytes(v) for f, v in zip(facts, vectors)}, embedder.name)
        counts["facts"] = len(facts)
    cache = cache_dir_for(settings, store)
    if cache is not None and cache.exists():
        shutil.rmtree(cache)
    return counts
