"""The dense indexes on disk: one FAISS file per user and key kind, and a metadata sidecar written last.

The cache is only ever a shortcut: `read` refuses (IndexFileError) a cache built with other settings or ahead
of the database (the database was replaced), and the caller rebuilds from the database.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memstream.memory.validate import utcnow
from memstream.retrieval import keys as keymod
from memstream.retrieval.lexical import Tokenizer
from memstream.retrieval.user_index import UserIndex
from memstream.retrieval.vector_index import IndexFileError, VectorIndex

CACHE_VERSION = 1
LEGACY_KEY_SETTINGS: dict[str, Any] = {"dense_kinds": sorted(keymod.KINDS), "round_vectors": "encoded"}
"""Key settings a sidecar written before they were recorded was built with (every kind had vectors, round keys
encoded from their own text)."""


@dataclass
class Loaded:
    users: dict[str, UserIndex]
    dim: int
    turn_cursor: int
    fact_cursor: int
    deletion_seq: int


def user_dir(cache_dir: Path, user_id: str) -> Path:
    return cache_dir / "users" / hashlib.sha1(user_id.encode()).hexdigest()[:20]


def read(cache_dir: Path, model: str, dim: int | None, key_settings: dict[str, Any], ann_threshold: int, tokenizer: Tokenizer,
         database_ids: dict[str, int]) -> Loaded | None:
    """The saved dense indexes (lexical ones are rebuilt on every start), or None when there is no cache.
    `key_settings`: what the keys were built with (round_neighbours, dense_kinds); any difference rebuilds."""
    meta_path = cache_dir / "metadata.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if (
        meta.get("version") != CACHE_VERSION
        or meta.get("model") != model
        or any(meta.get(name, LEGACY_KEY_SETTINGS.get(name)) != value for name, value in key_settings.items())
        or (dim is not None and meta.get("dim") != dim)
    ):
        raise IndexFileError("index cache was built with other settings")
    dim = int(meta["dim"])
    if meta["turn_cursor"] > database_ids["turn"] or meta["deletion_seq"] > database_ids["deletion"] or meta["fact_cursor"] > database_ids["fact"]:
        raise IndexFileError("index cache is ahead of the database (the database was replaced)")
    users: dict[str, UserIndex] = {}
    for user_id, counts in meta["users"].items():
        index = UserIndex(user_id, dim, ann_threshold, tokenizer)
        for kind, count in counts.items():
            if kind not in keymod.KINDS:
                raise IndexFileError(f"unknown key kind {kind!r} in the index metadata")
            index.dense[kind] = VectorIndex.load(user_dir(cache_dir, user_id) / f"{kind}.faiss", dim, ann_threshold, expected_count=count)
        users[user_id] = index
    return Loaded(users, dim, meta["turn_cursor"], meta["fact_cursor"], meta["deletion_seq"])


def write(cache_dir: Path, model: str, dim: int, key_settings: dict[str, Any], users: dict[str, UserIndex], *,
          turn_cursor: int, fact_cursor: int, deletion_seq: int) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    users_meta: dict[str, dict[str, int]] = {}
    for user_id, index in users.items():
        counts = {}
        for kind, vectors in index.dense.items():
            vectors.save(user_dir(cache_dir, user_id) / f"{kind}.faiss")
            counts[kind] = int(vectors._index.ntotal)
        users_meta[user_id] = counts
    meta = {
        "version": CACHE_VERSION, "model": model, "dim": dim, **key_settings,
        "turn_cursor": turn_cursor, "fact_cursor": fact_cursor, "deletion_seq": deletion_seq,
        "users": users_meta, "saved_at": utcnow().isoformat(),
    }
    tmp = cache_dir / "metadata.json.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, cache_dir / "metadata.json")
