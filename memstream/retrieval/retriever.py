"""Time-aware hybrid retrieval over one store: dense (FAISS) + lexical (BM25) over turn,
round, statement and fact keys, fused by reciprocal rank, per user.

Invariants:
- The database is the truth; every index here is a cache. `sync()` catches the caches up
  with the database (new turns and facts embedded and added, tombstones applied) and is
  what runs on start, so a deleted or corrupt cache is rebuilt, never trusted.
- Each user has their own sub-indexes: a search for user A cannot see B's keys, and the
  hits are re-read from the database filtered by user.
- Embeddings are stored back in the database with the model's name; a database embedded
  by another model raises EmbeddingModelMismatch instead of mixing vector spaces.

Modes: "dense" and "bm25" (turn keys only), "hybrid" (plain RRF of the two), and
"memstream" (the LongMemEval designs, each switchable in RetrievalSettings: round keys
for session decomposition, statement and fact keys for key expansion, and the question's
time window as extra restricted rankings, or as a filter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from memstream.memory.model import Fact, Turn
from memstream.memory.store import MemoryStore, check_id, utcnow
from memstream.retrieval import keys as keymod
from memstream.retrieval.embedder import Embedder, EmbedderCache, from_bytes, to_bytes
from memstream.retrieval.errors import EmbeddingModelMismatch, RetrievalError
from memstream.retrieval.event_windows import EventWindows, fact_window, merge_turn_ids
from memstream.retrieval.lexical import LexicalIndex, Tokenizer
from memstream.retrieval.provenance import prefer_own_statements
from memstream.retrieval.timeparse import TimeWindow, extract_time_window
from memstream.retrieval.vector_index import IndexFileError, VectorIndex, set_faiss_threads

log = logging.getLogger(__name__)

MODES = ("memstream", "hybrid", "bm25", "dense")
MAX_K = 1000
MAX_QUERY_CHARS = 20_000
CACHE_VERSION = 1
SYNC_BATCH = 4096
CONTEXT_LOOKBACK = 8  # turns read before new ones, beyond their rounds' neighbours (see _session_context)
# RRF weight of each ranked list: (retriever, key kind). Raw turn keys are the precise
# ones; round keys add context; statements and facts add paraphrases. Tuned on the LoCoMo
# dev split (see reports/locomo_retrieval/report.md for the ablation).
LIST_WEIGHTS = {
    ("dense", "turn"): 1.0,
    ("lexical", "turn"): 1.0,
    ("dense", "round"): 1.0,
    ("lexical", "round"): 0.7,
    ("dense", "statement"): 0.7,
    ("lexical", "statement"): 0.7,
    ("dense", "fact"): 0.8,
    ("lexical", "fact"): 0.6,
}


# -- results ------------------------------------------------------------------------------


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


# -- one user's indexes -------------------------------------------------------------------


class UserIndex:
    """Dense and lexical indexes per key kind for one user, plus the turn table
    (event time, conversation) the time window and conversation filters need."""

    def __init__(self, dim: int, ann_threshold: int, tokenizer: Tokenizer):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.dense: dict[str, VectorIndex] = {}
        self.lexical: dict[str, LexicalIndex] = {kind: LexicalIndex(tokenizer) for kind in keymod.KINDS}
        self._tokenizer = tokenizer
        self.turn_time: dict[int, int] = {}
        self.turn_conversation: dict[int, str] = {}
        self.turn_speaker: dict[int, str] = {}
        self.speaker_turns: Counter[str] = Counter()
        self.fact_turns: dict[int, list[int]] = {}
        self.turn_facts: dict[int, set[int]] = {}  # the reverse of fact_turns
        self.events = EventWindows()  # event-time facts' windows: time-aware search by when things happened
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def dense_index(self, kind: str) -> VectorIndex:
        index = self.dense.get(kind)
        if index is None:
            index = self.dense[kind] = VectorIndex(self.dim, self.ann_threshold)
        return index

    def note_turn(self, turn_id: int, when: datetime, conversation_id: str, speaker: str | None = None) -> None:
        self.turn_time[turn_id] = int(when.timestamp())
        self.turn_conversation[turn_id] = conversation_id
        if speaker:
            self.turn_speaker[turn_id] = speaker
            self.speaker_turns[speaker] += 1
        self._arrays = None

    def drop_turn(self, turn_id: int) -> None:
        self.turn_time.pop(turn_id, None)
        self.turn_conversation.pop(turn_id, None)
        speaker = self.turn_speaker.pop(turn_id, None)
        if speaker is not None:
            self.speaker_turns[speaker] -= 1
            if self.speaker_turns[speaker] <= 0:
                del self.speaker_turns[speaker]
        self._arrays = None
        for kind in ("turn", "round", "statement"):
            key = keymod.key_id(turn_id, kind)
            self.lexical[kind].remove([key])
            if kind in self.dense:
                self.dense[kind].remove([key])

    def note_fact(self, fact_id: int, turn_ids: Sequence[int]) -> None:
        self._forget_fact_sources(fact_id)
        self.fact_turns[fact_id] = list(turn_ids)
        for turn_id in turn_ids:
            self.turn_facts.setdefault(turn_id, set()).add(fact_id)

    def _forget_fact_sources(self, fact_id: int) -> None:
        for turn_id in self.fact_turns.pop(fact_id, ()):
            facts = self.turn_facts.get(turn_id)
            if facts is not None:
                facts.discard(fact_id)
                if not facts:
                    del self.turn_facts[turn_id]

    def drop_fact(self, fact_id: int) -> None:
        self._forget_fact_sources(fact_id)
        self.events.drop(fact_id)
        key = keymod.key_id(fact_id, "fact")
        self.lexical["fact"].remove([key])
        if "fact" in self.dense:
            self.dense["fact"].remove([key])

    def turn_count(self) -> int:
        return len(self.turn_time)

    def _turn_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            ids = np.fromiter(self.turn_time.keys(), dtype=np.int64, count=len(self.turn_time))
            times = np.fromiter(self.turn_time.values(), dtype=np.int64, count=len(self.turn_time))
            conversations = np.array([self.turn_conversation[i] for i in ids.tolist()], dtype=object)
            self._arrays = (ids, times, conversations)
        return self._arrays

    def allowed_turns(self, window: TimeWindow | None, conversation_id: str | None) -> np.ndarray | None:
        """Turn ids inside the window and conversation; None means every turn."""
        if window is None and conversation_id is None:
            return None
        ids, times, conversations = self._turn_arrays()
        mask = np.ones(len(ids), bool)
        if window is not None:
            mask &= (times >= int(window.start.timestamp())) & (times < int(window.end.timestamp()))
        if conversation_id is not None:
            mask &= conversations == conversation_id
        if window is not None and len(self.events):
            # Turns that talk about the window, whenever they were said.
            extra = {t for t in self.events.turns_in(window, self.fact_turns) if t in self.turn_time}
            if conversation_id is not None:
                extra = {t for t in extra if self.turn_conversation[t] == conversation_id}
            if extra:
                return np.array(merge_turn_ids(ids[mask].tolist(), extra), dtype=np.int64)
        return ids[mask]

    def allowed_keys(self, kind: str, turns: np.ndarray | None) -> np.ndarray | None:
        if turns is None:
            return None
        if kind == "fact":
            wanted = set(turns.tolist())
            facts = [f for f, sources in self.fact_turns.items() if wanted.intersection(sources)]
            return np.array([keymod.key_id(f, "fact") for f in facts], dtype=np.int64)
        return turns * 8 + keymod.KIND_CODE[kind]

    def key_turns(self, key: int) -> list[int]:
        item, kind = keymod.split_key(key)
        if kind == "fact":
            return self.fact_turns.get(item, [])
        return [item]

    def ranked(
        self, retriever: str, kind: str, query_vector: np.ndarray | None, query_text: str, depth: int, allowed_turns: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """One ranked list of (turn id, score), each turn once, best first."""
        allowed = self.allowed_keys(kind, allowed_turns)
        if allowed is not None and len(allowed) == 0:
            return []
        if retriever == "dense":
            index = self.dense.get(kind)
            if index is None or query_vector is None:
                return []
            key_ids, scores = index.search(query_vector, depth, allowed)
        else:
            key_ids, scores = self.lexical[kind].search(query_text, depth, allowed)
        out: list[tuple[int, float]] = []
        seen: set[int] = set()
        allowed_set = set(allowed_turns.tolist()) if allowed_turns is not None and kind == "fact" else None
        for key, score in zip(key_ids.tolist(), scores.tolist()):
            for turn_id in self.key_turns(key):
                if turn_id in seen or turn_id not in self.turn_time:
                    continue
                if allowed_set is not None and turn_id not in allowed_set:
                    continue
                seen.add(turn_id)
                out.append((turn_id, float(score)))
        return out


# -- the retriever ------------------------------------------------------------------------


@dataclass
class _Cursor:
    turn: int = 0
    fact: int = 0
    deletion: int = 0


class Retriever:
    """Per-user hybrid search over a MemoryStore. Thread-safe: one lock around index updates and searches."""

    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder | None,
        *,
        model_name: str,
        dim: int | None = None,
        cache_dir: Path | None = None,
        ann_threshold: int = 50_000,
        rrf_k: int = 60,
        candidates: int = 100,
        round_neighbours: int = 1,
        session_decomposition: bool = True,
        fact_expansion: bool = True,
        time_expansion: bool = True,
        time_mode: str = "boost",
        time_weight: float = 1.0,
        check_model: bool = True,
    ):
        self.store = store
        self.embedder = embedder
        self.model_name = model_name
        self.dim = embedder.dim if embedder is not None else dim
        self.cache_dir = cache_dir
        self.ann_threshold = ann_threshold
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.round_neighbours = round_neighbours
        self.session_decomposition = session_decomposition
        self.fact_expansion = fact_expansion
        self.time_expansion = time_expansion
        if time_mode not in ("boost", "filter"):
            raise RetrievalError(f"time_mode must be 'boost' or 'filter', got {time_mode!r}")
        self.time_mode = time_mode
        self.time_weight = time_weight
        self._lock = threading.RLock()
        self._tokenizer = Tokenizer()
        self._users: dict[str, UserIndex] = {}
        self._cursor = _Cursor()
        self._dense_cursor = _Cursor()
        self._dirty = False
        self._query_cache: dict[str, np.ndarray] = {}
        if check_model:
            self.check_model()
        self._load_cache()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls, settings, store: MemoryStore, load_embedder: bool = True, embedders: EmbedderCache | None = None, sync: bool = True,
        cache_dir: Path | None | Literal["auto"] = "auto",
    ) -> "Retriever":
        """The retriever the configuration describes, caught up with the database (unless sync=False).

        `cache_dir`: "auto" is `cache_dir_for(settings, store)`; None keeps the index in memory only
        (a server process that shares the cache location with another one).

        Without the embedder (load_embedder=False) only deletes are applied: enough for `forget`.
        """
        embedder = None
        if load_embedder:
            embedders = embedders or EmbedderCache()
            embedder = embedders.get(settings.embedder.model, settings.embedder.batch_size, settings.embedder.device, settings.embedder.threads)
        r = settings.retrieval
        set_faiss_threads(r.faiss_threads)
        retriever = cls(
            store,
            embedder,
            model_name=settings.embedder.model,
            cache_dir=cache_dir_for(settings, store) if cache_dir == "auto" else cache_dir,
            ann_threshold=r.ann_threshold,
            rrf_k=r.rrf_k,
            candidates=r.candidates,
            round_neighbours=r.round_neighbours,
            session_decomposition=r.session_decomposition,
            fact_expansion=r.fact_expansion,
            time_expansion=r.time_expansion,
            time_mode=r.time_mode,
            time_weight=r.time_weight,
        )
        if sync:
            retriever.sync()
        return retriever

    def check_model(self) -> None:
        """Raise EmbeddingModelMismatch when the database holds vectors of another model."""
        found = self.store.embedding_models()
        if any(name != self.model_name for name in found):
            raise EmbeddingModelMismatch(self.model_name, found)

    # -- the cache on disk ------------------------------------------------------------------

    def _meta_path(self) -> Path | None:
        return self.cache_dir / "metadata.json" if self.cache_dir else None

    def _user_dir(self, user_id: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / "users" / hashlib.sha1(user_id.encode()).hexdigest()[:20]

    def _load_cache(self) -> None:
        """Load the persisted dense indexes when they match this database and model; otherwise start empty."""
        meta_path = self._meta_path()
        if meta_path is None or not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (
                meta.get("version") != CACHE_VERSION
                or meta.get("model") != self.model_name
                or meta.get("round_neighbours") != self.round_neighbours
                or (self.dim is not None and meta.get("dim") != self.dim)
            ):
                raise IndexFileError("index cache was built with other settings")
            self.dim = int(meta["dim"])
            current = self.store.max_ids()
            if meta["turn_cursor"] > current["turn"] or meta["deletion_seq"] > current["deletion"] or meta["fact_cursor"] > current["fact"]:
                raise IndexFileError("index cache is ahead of the database (the database was replaced)")
            users: dict[str, UserIndex] = {}
            for user_id, counts in meta["users"].items():
                index = UserIndex(self.dim, self.ann_threshold, self._tokenizer)
                for kind, count in counts.items():
                    if kind not in keymod.KINDS:
                        raise IndexFileError(f"unknown key kind {kind!r} in the index metadata")
                    index.dense[kind] = VectorIndex.load(self._user_dir(user_id) / f"{kind}.faiss", self.dim, self.ann_threshold, expected_count=count)
                users[user_id] = index
        except (OSError, ValueError, KeyError, TypeError, IndexFileError) as exc:
            log.warning("rebuilding the retrieval index from the database: %s", exc)
            self._reset_cache_dir()
            return
        self._users = users
        self._dense_cursor = _Cursor(meta["turn_cursor"], meta["fact_cursor"], meta["deletion_seq"])
        self._cursor = _Cursor(0, 0, meta["deletion_seq"])

    def _reset_cache_dir(self) -> None:
        self._users = {}
        self._cursor = _Cursor()
        self._dense_cursor = _Cursor()
        if self.cache_dir and self.cache_dir.exists():
            shutil.rmtree(self.cache_dir)

    def save(self) -> None:
        """Write the dense indexes and the metadata sidecar (sidecar last, so a crash leaves it stale, not wrong)."""
        if self.cache_dir is None or self.dim is None:
            return
        with self._lock:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            users_meta: dict[str, dict[str, int]] = {}
            for user_id, index in self._users.items():
                user_dir = self._user_dir(user_id)
                counts = {}
                for kind, vectors in index.dense.items():
                    vectors.save(user_dir / f"{kind}.faiss")
                    counts[kind] = int(vectors._index.ntotal)
                users_meta[user_id] = counts
            meta = {
                "version": CACHE_VERSION,
                "model": self.model_name,
                "dim": self.dim,
                "round_neighbours": self.round_neighbours,
                "turn_cursor": self._cursor.turn,
                "fact_cursor": self._cursor.fact,
                "deletion_seq": self._cursor.deletion,
                "users": users_meta,
                "saved_at": utcnow().isoformat(),
            }
            tmp = self._meta_path().with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(tmp, self._meta_path())
            self._dirty = False

    # -- catching up with the database ----------------------------------------------------

    def _user(self, user_id: str) -> UserIndex:
        index = self._users.get(user_id)
        if index is None:
            if self.dim is None:
                raise RetrievalError("the index is empty and no embedder is loaded, so its dimension is unknown")
            index = self._users[user_id] = UserIndex(self.dim, self.ann_threshold, self._tokenizer)
        return index

    def sync(self, save: bool = True, turns: bool = True) -> int:
        """Catch the indexes up with the database; returns how many turns and facts were newly indexed.

        `turns=False`: deletes and facts only (the agent's enrichment worker, whose facts come from turns already
        indexed: the turns committed meanwhile are the next turn's to index, not a background job's to embed
        while the turn being answered waits to search)."""
        with self._lock:
            indexed = 0
            self._apply_deletions()
            if self.embedder is None:
                # Deletes only (the forget path); new rows wait for a process with the embedder.
                self._cursor.deletion = max(self._cursor.deletion, self._dense_cursor.deletion)
                if self._dirty and save and self._cursor.turn >= self._dense_cursor.turn:
                    self.save()
                elif self._dirty and save and self.cache_dir is not None:
                    self._save_dense_only()
                return 0
            batch: list[Turn] = []
            for turn in self.store.iter_turns(after_id=self._cursor.turn, batch_size=SYNC_BATCH) if turns else ():
                batch.append(turn)
                if len(batch) >= SYNC_BATCH:
                    indexed += self._index_turns(batch)
                    batch = []
            if batch:
                indexed += self._index_turns(batch)
            indexed += self._index_facts(list(self.store.iter_facts(after_id=self._cursor.fact)))
            # Only now, with every stored turn noted again (a loaded cache starts with none), is an empty user really empty.
            for user_id in [u for u, index in self._users.items() if turns and index.turn_count() == 0 and not index.fact_turns]:
                self._drop_user_files(user_id)
            if self._dirty and save:
                self.save()
            return indexed

    def _save_dense_only(self) -> None:
        # Without an embedder the lexical side was never built; persist dense deletes with the old cursors.
        saved = self._cursor
        self._cursor = _Cursor(self._dense_cursor.turn, self._dense_cursor.fact, saved.deletion)
        try:
            self.save()
        finally:
            self._cursor = saved

    def _apply_deletions(self) -> None:
        tombstones = self.store.deletions_after(self._cursor.deletion)
        deleted_turns = []
        for seq, user_id, kind, item_id in tombstones:
            index = self._users.get(user_id)
            if index is not None:
                if kind == "turn":
                    index.drop_turn(item_id)
                    deleted_turns.append(item_id)
                elif kind == "fact":
                    index.drop_fact(item_id)
                self._dirty = True
            self._cursor.deletion = seq
        if deleted_turns and self.embedder is not None:
            # SQLite may hand a deleted top id to the next insert: look again from the lowest deleted id.
            self._cursor.turn = min(self._cursor.turn, min(deleted_turns) - 1)
            self._dense_cursor.turn = min(self._dense_cursor.turn, min(deleted_turns) - 1)

    def _drop_user_files(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        if self.cache_dir is not None and self._user_dir(user_id).exists():
            shutil.rmtree(self._user_dir(user_id))
        self._dirty = True

    def add_turns_to_index(self, turns: Sequence[Turn]) -> int:
        """Live path: call right after committing turns; returns how many turns were newly indexed."""
        # Re-reading from the cursor (not trusting `turns`) also picks up turns other writers committed meanwhile.
        return self.sync(save=False)

    def _index_turns(self, turns: list[Turn]) -> int:
        """Build and add the keys of these turns (sorted by id); refresh the round keys of earlier turns whose neighbours arrived."""
        dense_known = self._dense_cursor.turn
        by_session: dict[tuple[str, Any], list[Turn]] = defaultdict(list)
        for turn in turns:
            by_session[(turn.user_id, turn.session_id if turn.session_id is not None else f"c:{turn.conversation_id}")].append(turn)
        jobs: list[tuple[UserIndex, str, int, str, Turn, bool]] = []  # (user index, kind, item id, text, turn, needs dense)
        new_count = 0
        refresh: set[tuple[int, int]] = set()  # (user index, key) of round keys being replaced
        for (user_id, session_id), fresh in by_session.items():
            index = self._user(user_id)
            fresh = [t for t in fresh if t.id not in index.turn_time]  # a rescan after deletes skips what is indexed
            if not fresh:
                continue
            context = fresh
            if fresh[0].position > 0 and isinstance(session_id, int):
                # Earlier turns of this session came in an earlier batch: read them for neighbours.
                context = self._session_context(user_id, session_id, fresh)
            positions = {t.id: i for i, t in enumerate(context)}
            fresh_ids = {t.id for t in fresh}
            first = min(positions[t.id] for t in fresh)
            for turn in fresh:
                index.note_turn(turn.id, turn.event_time, turn.conversation_id, turn.speaker)
                i = positions[turn.id]
                dense = turn.id > dense_known
                jobs.append((index, "turn", turn.id, keymod.turn_key_text(turn), turn, dense))
                jobs.append((index, "round", turn.id, keymod.round_key_text(context, i, self.round_neighbours), turn, dense))
                jobs.append((index, "statement", turn.id, keymod.statement_key_text(turn, keymod.other_speaker(context, i)), turn, dense))
                new_count += 1
            # Earlier turns whose round now includes a new neighbour.
            any_dense = any(t.id > dense_known for t in fresh)
            for i in range(max(0, first - self.round_neighbours), first):
                old = context[i]
                if old.id not in fresh_ids and old.id in index.turn_time:
                    jobs.append((index, "round", old.id, keymod.round_key_text(context, i, self.round_neighbours), old, any_dense))
                    refresh.add((id(index), keymod.key_id(old.id, "round")))
        self._add_jobs(jobs, refresh)
        if turns:
            self._cursor.turn = max(self._cursor.turn, turns[-1].id)
            self._dirty = True
        return new_count

    def _session_context(self, user_id: str, session_id: int, fresh: list[Turn]) -> list[Turn]:
        """The session's turns the keys of `fresh` (sorted by id) and the refreshed rounds before them depend on:
        every turn from the first fresh one on, and the last few before it, not the whole session (a live
        conversation is one session that only grows). The whole session only when a fresh turn's nearest other
        speaker lies further back than that (a monologue)."""
        by_id = {t.id: t for t in fresh}
        lookback = 2 * self.round_neighbours + CONTEXT_LOOKBACK
        before = self.store.list_turns(user_id, session_id=session_id, before_id=fresh[0].id, limit=lookback, newest_first=True)
        since = self.store.list_turns(user_id, session_id=session_id, after_id=fresh[0].id - 1)
        context = [by_id.get(t.id, t) for t in reversed(before)] + [by_id.get(t.id, t) for t in since]
        if len(before) < lookback:
            return context  # the session from its start
        positions = {t.id: i for i, t in enumerate(context)}
        for turn in fresh:
            i = positions.get(turn.id)
            distance = keymod.other_speaker_distance(context, i) if i is not None else None
            if distance is None or distance > i:
                return [by_id.get(t.id, t) for t in self.store.list_turns(user_id, session_id=session_id)]
        return context

    def _add_jobs(self, jobs: list[tuple[UserIndex, str, int, str, Turn, bool]], refresh: set[tuple[int, int]]) -> None:
        if not jobs:
            return
        # Lexical: always (it is rebuilt on every process start).
        grouped: dict[tuple[int, str], tuple[UserIndex, str, list[int], list[str]]] = {}
        for index, kind, item, text, _turn, _dense in jobs:
            entry = grouped.setdefault((id(index), kind), (index, kind, [], []))
            entry[2].append(keymod.key_id(item, kind))
            entry[3].append(text)
        for index, kind, ids, texts in grouped.values():
            index.lexical[kind].add(ids, texts)
        # Dense: only keys the loaded cache lacks. Turn keys reuse the database's vectors of this model.
        need = [job for job in jobs if job[5]]
        vectors: list[np.ndarray | None] = []
        to_embed: list[int] = []
        for position, (_index, kind, _item, _text, turn, _dense) in enumerate(need):
            vector = None
            if kind == "turn" and turn.embedding is not None and turn.embedding_model == self.model_name:
                vector = from_bytes(turn.embedding, self.dim)
            vectors.append(vector)
            if vector is None:
                to_embed.append(position)
        if to_embed:
            embedded = self.embedder.embed([need[p][3] for p in to_embed])
            store_back: dict[int, bytes] = {}
            for p, vector in zip(to_embed, embedded):
                vectors[p] = vector
                if need[p][1] == "turn":
                    store_back[need[p][2]] = to_bytes(vector)
            self.store.set_embeddings("turn", store_back, self.model_name)
        dense_groups: dict[tuple[int, str], tuple[UserIndex, str, list[int], list[np.ndarray]]] = {}
        for (index, kind, item, _text, _turn, _dense), vector in zip(need, vectors):
            entry = dense_groups.setdefault((id(index), kind), (index, kind, [], []))
            entry[2].append(keymod.key_id(item, kind))
            entry[3].append(vector)
        for index, kind, ids, vecs in dense_groups.values():
            target = index.dense_index(kind)
            stale = [key for key in ids if (id(index), key) in refresh]
            if stale:
                target.remove(stale)  # a round key is replaced when its turn's neighbour arrives
            target.add(np.array(ids, dtype=np.int64), np.stack(vecs))

    def _index_facts(self, facts: list[tuple[Fact, bytes | None, str | None]]) -> int:
        if not facts:
            return 0
        dense_known = self._dense_cursor.fact
        texts, owners, fact_ids, vectors, to_embed = [], [], [], [], []
        for fact, blob, model in facts:
            index = self._user(fact.user_id)
            index.note_fact(fact.id, fact.source_turn_ids)
            index.events.note(fact.id, fact_window(fact))
            text = keymod.fact_key_text(fact)
            index.lexical["fact"].add([keymod.key_id(fact.id, "fact")], [text])
            if fact.id <= dense_known:
                continue
            vector = from_bytes(blob, self.dim) if blob is not None and model == self.model_name else None
            owners.append(index)
            fact_ids.append(fact.id)
            texts.append(text)
            vectors.append(vector)
            if vector is None:
                to_embed.append(len(vectors) - 1)
        if to_embed:
            embedded = self.embedder.embed([texts[p] for p in to_embed])
            for p, vector in zip(to_embed, embedded):
                vectors[p] = vector
            self.store.set_embeddings("fact", {fact_ids[p]: to_bytes(vectors[p]) for p in to_embed}, self.model_name)
        for index, fact_id, vector in zip(owners, fact_ids, vectors):
            target = index.dense_index("fact")
            target.remove([keymod.key_id(fact_id, "fact")])
            target.add(np.array([keymod.key_id(fact_id, "fact")], dtype=np.int64), vector.reshape(1, -1))
        self._cursor.fact = max(self._cursor.fact, facts[-1][0].id)
        self._dirty = True
        return len(facts)

    # -- search -----------------------------------------------------------------------------

    def _validate(self, user_id: str, query: str, k: int, mode: str) -> str:
        try:
            check_id("user id", user_id)
        except ValueError as exc:
            raise RetrievalError(str(exc)) from None
        check_search_args(query, k)
        if mode not in MODES:
            raise RetrievalError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if self.embedder is None and mode != "bm25":
            raise RetrievalError("this retriever was opened without an embedder; only mode='bm25' can search")
        return query.strip()

    def _lists(self, mode: str) -> list[tuple[str, str]]:
        if mode == "dense":
            return [("dense", "turn")]
        if mode == "bm25":
            return [("lexical", "turn")]
        if mode == "hybrid":
            return [("dense", "turn"), ("lexical", "turn")]
        lists = [("dense", "turn"), ("lexical", "turn")]
        if self.session_decomposition:
            lists += [("dense", "round"), ("lexical", "round")]
        if self.fact_expansion:
            lists += [("dense", "statement"), ("lexical", "statement"), ("dense", "fact"), ("lexical", "fact")]
        return lists

    def search(
        self,
        user_id: str,
        query: str,
        k: int = 10,
        now: datetime | None = None,
        conversation_id: str | None = None,
        time_window: TimeWindow | None = None,
        mode: str = "memstream",
        time_mode: str | None = None,
    ) -> SearchResult:
        """The k turns of `user_id` that best answer `query`, with per-retriever scores.

        `now` is the question's date (relative expressions resolve against it; default:
        the clock). `time_window` overrides the window parsed from the query. In memstream
        mode the window adds rankings restricted to it (time_mode="boost") or drops every
        turn outside it (time_mode="filter").
        """
        started = time.perf_counter()
        query = self._validate(user_id, query, k, mode)
        time_mode = time_mode or self.time_mode
        if time_mode not in ("boost", "filter"):
            raise RetrievalError(f"time_mode must be 'boost' or 'filter', got {time_mode!r}")
        timings: dict[str, float] = {}
        window = time_window
        if window is None and mode == "memstream" and self.time_expansion:
            window = extract_time_window(query, now or utcnow())
        index = self._users.get(user_id)
        if index is None:
            self.store.require_user(user_id)  # unknown user: a clear error; known but empty: no hits
            return SearchResult(query, [], window, mode, {"total": _ms(started)})
        lists = self._lists(mode)
        query_vector = None
        if any(r == "dense" for r, _ in lists):
            t0 = time.perf_counter()
            query_vector = self._embed_query(query)
            timings["embed"] = _ms(t0)
        depth = max(self.candidates, k)
        fused: dict[int, float] = defaultdict(float)
        best_dense: dict[int, float] = {}
        best_lexical: dict[int, float] = {}
        via: dict[int, tuple[float, str]] = {}
        with self._lock:
            base_allowed = index.allowed_turns(window if time_mode == "filter" and window else None, conversation_id)
            window_allowed = index.allowed_turns(window, conversation_id) if window is not None and mode == "memstream" and time_mode == "boost" else None
            runs: list[tuple[str, str, float, np.ndarray | None, str]] = [
                (r, kind, LIST_WEIGHTS[(r, kind)], base_allowed, kind) for r, kind in lists
            ]
            if window_allowed is not None:
                time_kind = "round" if self.session_decomposition else "turn"
                runs += [(r, time_kind, self.time_weight, window_allowed, "time") for r in ("dense", "lexical")]
            for retriever, kind, weight, allowed, label in runs:
                t0 = time.perf_counter()
                ranked = index.ranked(retriever, kind, query_vector, query, depth, allowed)
                timings[retriever] = timings.get(retriever, 0.0) + _ms(t0)
                scores = best_dense if retriever == "dense" else best_lexical
                for rank, (turn_id, score) in enumerate(ranked):
                    contribution = weight / (self.rrf_k + rank + 1)
                    fused[turn_id] += contribution
                    if score > scores.get(turn_id, float("-inf")):
                        scores[turn_id] = score
                    if contribution > via.get(turn_id, (0.0, ""))[0]:
                        via[turn_id] = (contribution, label)
        t0 = time.perf_counter()
        order = sorted(fused, key=lambda t: (-fused[t], t))[:k]
        timings["fuse"] = _ms(t0)
        t0 = time.perf_counter()
        turns = {t.id: t for t in self.store.get_turns(user_id, order)}  # the database is the truth: deleted turns vanish here
        timings["fetch"] = _ms(t0)
        hits = []
        for turn_id in order:
            turn = turns.get(turn_id)
            if turn is None:
                continue
            hits.append(
                Hit(turn, best_dense.get(turn_id), best_lexical.get(turn_id), fused[turn_id], len(hits) + 1, via[turn_id][1])
            )
        if mode == "memstream":
            hits = prefer_own_statements(hits)  # provenance: a statement above the assistant reply that restates it
        timings["total"] = _ms(started)
        return SearchResult(query, hits, window, mode, timings)

    def _embed_query(self, query: str) -> np.ndarray:
        # Agents and benchmarks ask the same query of several modes; a small cache saves the model call.
        vector = self._query_cache.get(query)
        if vector is None:
            vector = self.embedder.embed([query])[0]
            if len(self._query_cache) >= 4096:
                self._query_cache.pop(next(iter(self._query_cache)))
            self._query_cache[query] = vector
        return vector

    def prime_query_cache(self, queries: Sequence[str], vectors: np.ndarray) -> None:
        """Hand over query embeddings computed in a batch (benchmarks ask many known questions)."""
        for query, vector in zip(queries, vectors):
            self._query_cache[query.strip()] = vector
        while len(self._query_cache) > max(4096, len(queries)):
            self._query_cache.pop(next(iter(self._query_cache)))

    def speakers(self, user_id: str) -> set[str]:
        """The speaker names in this user's indexed turns."""
        with self._lock:
            index = self._users.get(user_id)
            return set(index.speaker_turns) if index is not None else set()

    def search_sessions(self, user_id: str, query: str, k: int = 5, **options) -> list[SessionHit]:
        """Sessions ranked by their turns' fused scores (max, plus a little for each further hit)."""
        result = self.search(user_id, query, k=min(MAX_K, max(k * 10, 50)), **options)
        grouped: dict[int | None, list[Hit]] = defaultdict(list)
        for hit in result.hits:
            grouped[hit.session_id].append(hit)
        sessions = [
            SessionHit(session_id, hits[0].fused_score + 0.1 * sum(h.fused_score for h in hits[1:]), hits)
            for session_id, hits in grouped.items()
        ]
        sessions.sort(key=lambda s: -s.score)
        return sessions[:k]

    def facts_of_turns(self, user_id: str, turn_ids: Iterable[int]) -> tuple[set[int], int]:
        """(ids of the indexed facts drawn from these turns, the fact id through which the index is complete): facts
        above that id are not indexed yet, so a caller that needs every fact reads those from the store."""
        with self._lock:
            index = self._users.get(user_id)
            found: set[int] = set()
            if index is not None:
                for turn_id in turn_ids:
                    found.update(index.turn_facts.get(turn_id, ()))
            return found, self._cursor.fact

    def indexed_turns(self, user_id: str) -> int:
        index = self._users.get(user_id)
        return index.turn_count() if index else 0

    def close(self) -> None:
        if self._dirty:
            self.save()


def check_search_args(query: str, k: int) -> str:
    """Validate a query and k before any work (the CLI calls this before loading the model)."""
    if not isinstance(query, str) or not query.strip():
        raise RetrievalError("the query is empty: give some words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise RetrievalError(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise RetrievalError(f"k={k} is too large; the limit is {MAX_K}")
    return query.strip()


def reembed(settings, store: MemoryStore, embedders: EmbedderCache | None = None) -> dict[str, int]:
    """Re-embed every turn and fact with the configured model and rebuild the index cache."""
    embedders = embedders or EmbedderCache()
    embedder = embedders.get(settings.embedder.model, settings.embedder.batch_size, settings.embedder.device, settings.embedder.threads)
    counts = {"turns": 0, "facts": 0}
    batch: list[Turn] = []

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


def cache_dir_for(settings, store: MemoryStore) -> Path | None:
    """Where the index cache lives: beside a SQLite file, or in the data dir keyed by the database URL."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in settings.embedder.model)[-60:]
    path = store.sqlite_path
    if path is not None:
        return path.parent / f"{path.name}.index" / slug
    if store.is_sqlite:  # in-memory SQLite: nothing to persist
        return None
    digest = hashlib.sha1(store.url.encode()).hexdigest()[:16]
    return settings.data_dir / "index" / f"{digest}-{slug}"


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
