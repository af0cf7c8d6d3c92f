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

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from memstream.memory.model import Fact, Turn
from memstream.retrieval.dense_jobs import DenseJob, DenseQueue, add_vectors, embed_jobs, reuse_indexed_parts
from memstream.retrieval import index_cache
from memstream.retrieval import keys as keymod
from memstream.retrieval.embedder import Embedder, QueryVectors, to_bytes
from memstream.retrieval.errors import EmbeddingModelMismatch, RetrievalError
from memstream.retrieval.event_windows import fact_window
from memstream.retrieval.lexical import Tokenizer
from memstream.retrieval.fusion import fused_search
from memstream.retrieval.results import SearchResult, SessionHit
from memstream.retrieval.search_args import check_search, check_time_mode, rank_sessions, session_search_k
from memstream.retrieval.session_context import by_session, context_lookback, session_context
from memstream.retrieval.source import IndexSource
from memstream.retrieval.user_index import UserIndex
from memstream.retrieval.timeparse import TimeWindow
from memstream.retrieval.vector_index import IndexFileError

log = logging.getLogger(__name__)

SYNC_BATCH = 4096
PART_WAIT_S = 5.0  # the longest an indexer batch waits for an earlier batch's statement vectors (DenseQueue.wait_for_parts)


# -- the retriever ------------------------------------------------------------------------


@dataclass
class _Cursor:
    turn: int = 0
    fact: int = 0
    deletion: int = 0


@dataclass
class _Job:
    """A key of an indexed turn: in the keyword index at once, queued for a vector when `dense`."""
    index: UserIndex
    kind: str
    item_id: int
    text: str
    turn: Turn
    dense: bool
    parts: tuple[tuple[int, str], ...] = ()
    """A pooled round key's statement keys (DenseJob.parts)."""


class Retriever:
    """Per-user hybrid search over a MemoryStore. Thread-safe: one lock around index updates and searches."""

    def __init__(
        self,
        store: IndexSource,
        embedder: Embedder | None,
        *,
        model_name: str,
        dim: int | None = None,
        cache_dir: Path | None = None,
        ann_threshold: int = 50_000,
        rrf_k: int = 30,
        candidates: int = 100,
        round_neighbours: int = 1,
        dense_kinds: Sequence[str] = keymod.KINDS,
        round_vectors: str = "statements",
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
        self.context_lookback = context_lookback(round_neighbours)
        self.session_decomposition = session_decomposition
        self.dense_kinds = tuple(dense_kinds)
        try:
            self.pooled_rounds = keymod.check_round_vectors(round_vectors, self.dense_kinds)
        except ValueError as exc:
            raise RetrievalError(str(exc)) from None
        self.round_vectors = round_vectors
        self.fact_expansion = fact_expansion
        self.time_expansion = time_expansion
        self.time_mode = check_time_mode(time_mode)
        self.time_weight = time_weight
        self._lock = threading.RLock()
        self._tokenizer = Tokenizer()
        self._users: dict[str, UserIndex] = {}
        self._cursor = _Cursor()
        self._dense_cursor = _Cursor()
        self._ahead: set[int] = set()  # turn ids above the cursor already indexed (their writers went first)
        self._claims_lock = threading.Lock()
        self._claimed: set[int] = set()  # turn ids committed by writers in this process that are about to index them
        self._dirty = False
        self._synced_once = False
        self.queries = QueryVectors(embedder)
        # Dense keys waiting for the background indexer (background=True); inline otherwise.
        self.background = False
        self.queue = DenseQueue(self._lock)
        self.skipped: dict[str, str] = {}
        """Rows that could not be indexed ("turn 12" -> reason): skipped, reported, never retried in this process."""
        if check_model:
            self.check_model()
        self._load_cache()

    # -- construction ---------------------------------------------------------------------

    def check_model(self) -> None:
        """Raise EmbeddingModelMismatch when the database holds vectors of another model."""
        found = self.store.embedding_models()
        if any(name != self.model_name for name in found):
            raise EmbeddingModelMismatch(self.model_name, found)

    # -- the cache on disk ------------------------------------------------------------------

    def _load_cache(self) -> None:
        """Load the persisted dense indexes when they match this database and model; otherwise start empty."""
        if self.cache_dir is None:
            return
        try:
            loaded = index_cache.read(self.cache_dir, self.model_name, self.dim, self._key_settings(), self.ann_threshold,
                                      self._tokenizer, self.store.max_ids())
        except (OSError, ValueError, KeyError, TypeError, IndexFileError) as exc:
            log.warning("rebuilding the retrieval index from the database: %s", exc)
            self._reset_cache_dir()
            return
        if loaded is None:
            return
        self._users, self.dim = loaded.users, loaded.dim
        self._dense_cursor = _Cursor(loaded.turn_cursor, loaded.fact_cursor, loaded.deletion_seq)
        self._cursor = _Cursor(0, 0, loaded.deletion_seq)

    def _key_settings(self) -> dict[str, Any]:
        """What the saved vectors depend on besides the model: a cache built otherwise is rebuilt."""
        return {"round_neighbours": self.round_neighbours, "dense_kinds": sorted(self.dense_kinds), "round_vectors": self.round_vectors}

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
            index_cache.write(
                self.cache_dir, self.model_name, self.dim, self._key_settings(), self._users,
                turn_cursor=self.queue.resume_point(False, self._cursor.turn),
                fact_cursor=self.queue.resume_point(True, self._cursor.fact),
                deletion_seq=self._cursor.deletion,
            )
            self._dirty = False

    # -- catching up with the database ----------------------------------------------------

    def _user(self, user_id: str) -> UserIndex:
        index = self._users.get(user_id)
        if index is None:
            if self.dim is None:
                raise RetrievalError("the index is empty and no embedder is loaded, so its dimension is unknown")
            index = self._users[user_id] = UserIndex(user_id, self.dim, self.ann_threshold, self._tokenizer)
        return index

    def sync(self, save: bool = True, turns: bool = True, fresh: Sequence[Turn] = (), through: dict[str, int] | None = None) -> int:
        """Catch the indexes up with the database; returns how many turns and facts were newly indexed.

        `turns=False`: deletes and facts only (the agent's enrichment worker, whose facts come from turns already
        indexed: the turns committed meanwhile are the next turn's to index, not a background job's to embed
        while the turn being answered waits to search).
        `fresh`: turns the caller just committed. `through`: the store's max_ids() if the caller read them already.
        One max_ids() read decides whether anything else changed: when nothing did, a search's catch-up reads nothing
        more, and an add indexes its own turns without reading them back."""
        ids = [t.id for t in fresh]
        # The fast path needs one full pass first (a cache loaded at open is caught up by it), and leaves saving a
        # changed index to the full pass. Read unlocked as a hint; checked again under the lock.
        fast = self.embedder is not None and turns and self._synced_once and not (save and self._dirty)
        # The neighbours of the caller's turns, read before taking the lock (searches wait on it, reads need not);
        # only the fast path uses them (the full pass reads its own).
        contexts = {key: self._session_context(key[0], key[1], group) for key, group in by_session(fresh).items()
                    if group[0].position > 0 and isinstance(key[1], int)} if fast and fresh else {}
        self.claim(ids)  # Memory.add claimed them already, inside its transaction
        try:
            if fast and through is None:
                through = self.store.max_ids()  # before the lock: rows committed later are their writers' to index
            with self._lock:
                if fast and self._synced_once and not (save and self._dirty):
                    if not self._changed_besides(ids, through):
                        return self._index_ahead(list(fresh), contexts) if fresh else 0
                return self._sync_all(save, turns)
        finally:
            self.release(ids)

    def claim(self, ids: Iterable[int]) -> None:
        """Turn ids committed (or about to be) by a writer in this process that will index them itself: other
        writers' catch-ups need not read them back."""
        with self._claims_lock:
            self._claimed.update(ids)

    def release(self, ids: Iterable[int]) -> None:
        with self._claims_lock:
            self._claimed.difference_update(ids)

    def _changed_besides(self, ids: Sequence[int], through: dict[str, int]) -> bool:
        """Whether the store holds rows the index has not seen other than `ids` (the caller's own new turns) and the
        turns other writers in this process committed and are about to index themselves."""
        if through["fact"] > self._cursor.fact or through["deletion"] > self._cursor.deletion:
            return True
        low, high = self._cursor.turn, through["turn"]
        if high <= low:
            return False
        with self._claims_lock:
            known = {i for i in (*self._ahead, *self._claimed, *ids) if low < i <= high}
        # Ids are whole numbers: every id in (cursor, top] is accounted for, or some writer's turn is unseen.
        return len(known) < high - low

    def _index_ahead(self, fresh: list[Turn], contexts: dict[tuple[str, Any], list[Turn]]) -> int:
        """Index the caller's own turns while other writers' turns below them are still on their way: the cursor stays
        below the gap (it means "everything up to here is indexed") and moves up as the gap closes."""
        indexed = self._index_turns(fresh, advance=False, contexts=contexts, bulk=False)
        self._ahead.update(t.id for t in fresh if t.id > self._cursor.turn)  # a full pass may have gone first
        while self._cursor.turn + 1 in self._ahead:
            self._cursor.turn += 1
            self._ahead.discard(self._cursor.turn)
        return indexed

    def _sync_all(self, save: bool, turns: bool) -> int:
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
            if turns:
                self._synced_once = True
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
                with index.lock:
                    if kind == "turn":
                        index.drop_turn(item_id)
                        deleted_turns.append(item_id)
                    elif kind == "fact":
                        index.drop_fact(item_id)
                self._dirty = True
            self._cursor.deletion = seq
        if deleted_turns and self.embedder is not None:
            # SQLite hands the next insert the highest stored id + 1, which may be a deleted id, also one deleted in
            # an earlier catch-up (each delete syncs): look again from below both the lowest deleted and the top stored id.
            again = min(min(deleted_turns) - 1, self.store.max_ids()["turn"])
            self._cursor.turn = min(self._cursor.turn, again)
            self._dense_cursor.turn = min(self._dense_cursor.turn, again)
            self._ahead.clear()  # the full pass that follows rereads from the lowered cursor

    def _drop_user_files(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        if self.cache_dir is not None and index_cache.user_dir(self.cache_dir, user_id).exists():
            shutil.rmtree(index_cache.user_dir(self.cache_dir, user_id))
        self._dirty = True

    def add_turns_to_index(self, turns: Sequence[Turn]) -> int:
        """Live path: call right after committing turns; returns how many turns were newly indexed."""
        # Re-reading from the cursor (not trusting `turns`) also picks up turns other writers committed meanwhile.
        return self.sync(save=False)

    def _index_turns(self, turns: list[Turn], advance: bool = True, contexts: dict[tuple[str, Any], list[Turn]] | None = None,
                     bulk: bool = True) -> int:
        """Build and add the keys of these turns (sorted by id); refresh the round keys of earlier turns whose neighbours arrived.
        `bulk`: a catch-up's (the default), not a write's own keys (DenseJob.bulk)."""
        dense_known = self._dense_cursor.turn
        sessions = by_session(turns)
        contexts = contexts or {}
        jobs: list[_Job] = []
        new_count = 0
        refresh: set[tuple[UserIndex, int]] = set()  # (user index, key) of round keys being replaced
        open_rounds: set[tuple[int, int]] = set()  # (id(user index), turn id) of rounds whose next turns are not here yet
        for (user_id, session_id), fresh in sessions.items():
            index = self._user(user_id)
            fresh = [t for t in fresh if t.id not in index.turn_time]  # a rescan after deletes skips what is indexed
            if not fresh:
                continue
            context = fresh
            if (user_id, session_id) in contexts and [t.id for t in fresh] == [t.id for t in sessions[(user_id, session_id)]]:
                context = contexts[(user_id, session_id)]
            elif fresh[0].position > 0 and isinstance(session_id, int):
                # Earlier turns of this session came in an earlier batch: read them for neighbours.
                context = self._session_context(user_id, session_id, fresh)
            if not bulk and isinstance(session_id, int):
                # Live writes only: a catch-up over a whole database would keep a copy of every user's last turns.
                with index.lock:
                    index.remember_tail(session_id, context, self.context_lookback)
            positions = {t.id: i for i, t in enumerate(context)}
            statement = keymod.statement_texts(context)
            fresh_ids = {t.id for t in fresh}
            first = min(positions[t.id] for t in fresh)
            for turn in fresh:
                try:
                    with index.lock:
                        index.note_turn(turn.id, turn.event_time, turn.conversation_id, turn.speaker)
                except (ValueError, OverflowError, OSError, TypeError) as exc:
                    self._skip(f"turn {turn.id}", exc)  # a row stored before validation existed: never wedge the index
                    continue
                i = positions[turn.id]
                dense = turn.id > dense_known
                jobs.append(_Job(index, "turn", turn.id, keymod.turn_key_text(turn), turn, dense))
                jobs.append(self._round_job(index, context, i, dense, statement))
                if i + self.round_neighbours >= len(context):
                    open_rounds.add((id(index), turn.id))
                jobs.append(_Job(index, "statement", turn.id, statement(i), turn, dense))
                new_count += 1
            # Earlier turns whose round now includes a new neighbour.
            any_dense = any(t.id > dense_known for t in fresh)
            for i in range(max(0, first - self.round_neighbours), first):
                old = context[i]
                if old.id not in fresh_ids and old.id in index.turn_time:
                    jobs.append(self._round_job(index, context, i, any_dense, statement))
                    refresh.add((index, keymod.key_id(old.id, "round")))
                    if i + self.round_neighbours >= len(context):
                        open_rounds.add((id(index), old.id))
        self._add_jobs(jobs, refresh, origin=turns[0].id if turns else 0, open_rounds=open_rounds, bulk=bulk)
        if turns:
            if advance:  # these are every stored turn up to the last one (a full pass reads them in order)
                self._cursor.turn = max(self._cursor.turn, turns[-1].id)
                self._ahead = {i for i in self._ahead if i > self._cursor.turn}
            self._dirty = True
        return new_count

    def _session_context(self, user_id: str, session_id: int, fresh: list[Turn]) -> list[Turn]:
        return session_context(self.store, self._users.get(user_id), user_id, session_id, fresh, self.context_lookback)

    def _round_job(self, index: UserIndex, context: list[Turn], i: int, dense: bool, statement: Callable[[int], str]) -> _Job:
        """The round key of the turn at `i` of its session's `context`; pooled from its turns' statement keys (when
        round_vectors is 'statements'), whose texts need the same context (their other speaker)."""
        parts = keymod.round_parts(context, i, self.round_neighbours, statement) if dense and self.pooled_rounds else ()
        return _Job(index, "round", context[i].id, keymod.round_key_text(context, i, self.round_neighbours), context[i], dense, parts)

    def _add_jobs(self, jobs: list[_Job], refresh: set[tuple[UserIndex, int]], origin: int,
                  open_rounds: set[tuple[int, int]], bulk: bool) -> None:
        if not jobs:
            return
        # Lexical: always, at once (it is rebuilt on every process start and costs microseconds a key).
        grouped: dict[tuple[int, str], tuple[UserIndex, str, list[int], list[str]]] = {}
        for job in jobs:
            entry = grouped.setdefault((id(job.index), job.kind), (job.index, job.kind, [], []))
            entry[2].append(keymod.key_id(job.item_id, job.kind))
            entry[3].append(job.text)
        for index, kind, ids, texts in grouped.values():
            with index.lock:
                index.lexical[kind].add(ids, texts)
        # Dense: only keys the loaded cache lacks. Turn keys reuse the database's vectors of this model.
        dense = []
        for job in jobs:
            if not job.dense or job.kind not in self.dense_kinds:
                continue
            turn, index = job.turn, job.index
            stored = turn.embedding if job.kind == "turn" and turn.embedding_model == self.model_name else None
            dense.append(DenseJob(index, index.user_id, job.kind, job.item_id, job.text, origin, stored, parts=job.parts,
                                  deferred=not job.parts and job.kind == "round" and (id(index), job.item_id) in open_rounds, bulk=bulk))
        for index, key in refresh:
            # A round key is replaced when its turn's neighbour arrives: the old vector goes now, the new one follows.
            if "round" in index.dense:
                with index.lock:
                    index.dense["round"].remove([key])
        self._queue(dense)

    def _index_facts(self, facts: list[tuple[Fact, bytes | None, str | None]]) -> int:
        if not facts:
            return 0
        dense_known = self._dense_cursor.fact
        origin = facts[0][0].id
        dense = []
        for fact, blob, model in facts:
            index = self._user(fact.user_id)
            text = keymod.fact_key_text(fact)
            with index.lock:
                index.note_fact(fact.id, fact.source_turn_ids)
                index.events.note(fact.id, fact_window(fact))
                index.lexical["fact"].add([keymod.key_id(fact.id, "fact")], [text])
            if fact.id > dense_known and "fact" in self.dense_kinds:
                dense.append(DenseJob(index, fact.user_id, "fact", fact.id, text, origin, blob if model == self.model_name else None))
        self._queue(dense)
        self._cursor.fact = max(self._cursor.fact, facts[-1][0].id)
        self._dirty = True
        return len(facts)

    # -- dense keys: queued for the background indexer, or embedded inline ----------------

    def _queue(self, jobs: list[DenseJob]) -> None:
        if not jobs:
            return
        if not self.background:
            self._embed_and_add(jobs)
            return
        self.queue.put(jobs)

    def embed_pending(self, max_keys: int = 256) -> int:
        """Embed up to `max_keys` queued dense keys (the model runs outside the lock) and add them; returns how many."""
        batch = self.queue.take(max_keys)
        if not batch:
            return 0
        try:
            with self._lock:
                self.queue.wait_for_parts(batch, PART_WAIT_S)
                reuse_indexed_parts(batch)
            vectors, failed = embed_jobs(self.embedder, self.dim, batch)
            with self._lock:
                self._dirty |= add_vectors(batch, vectors, failed, self._users, self._skip)
        finally:
            self.queue.done(batch)
        self._store_vectors(batch, vectors, failed)
        return len(batch)

    def _embed_and_add(self, jobs: list[DenseJob]) -> None:
        reuse_indexed_parts(jobs)
        vectors, failed = embed_jobs(self.embedder, self.dim, jobs)
        self._dirty |= add_vectors(jobs, vectors, failed, self._users, self._skip)
        self._store_vectors(jobs, vectors, failed)

    def _store_vectors(self, jobs: list[DenseJob], vectors: list[np.ndarray | None], failed: dict[int, str]) -> None:
        # Turn and fact vectors go back to the database (a rebuild reuses them); round and statement keys are cheap
        # to recompute from their turns and are not stored.
        for kind in ("turn", "fact"):
            blobs = {
                job.item_id: to_bytes(vector)
                for position, (job, vector) in enumerate(zip(jobs, vectors))
                if job.kind == kind and job.stored is None and vector is not None and position not in failed
            }
            self.store.set_embeddings(kind, blobs, self.model_name)

    def pending(self, user_id: str | None = None) -> int:
        """Dense keys still waiting for their vectors (of one user, or of all)."""
        return self.queue.pending(user_id)

    def pending_turns(self, user_id: str) -> set[int]:
        return self.queue.pending_turns(user_id)

    def wait_until_embedded(self, user_id: str | None, timeout_s: float) -> bool:
        return self.queue.wait_until_empty(user_id, timeout_s)

    def wait_for_room(self, limit: int, timeout_s: float) -> bool:
        """Wait until fewer than `limit` dense keys are queued (the write path's back-pressure); False on timeout."""
        return self.queue.wait_until_below(limit, timeout_s)

    def wait_for_work(self, timeout_s: float) -> bool:
        return self.queue.wait_for_work(timeout_s)

    def _skip(self, what: str, reason: BaseException | str) -> None:
        if what not in self.skipped:
            log.warning("cannot index %s, skipped: %s", what, reason)
        if len(self.skipped) < 10_000:
            self.skipped[what] = str(reason)[:300]

    # -- search -----------------------------------------------------------------------------

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
        exclude: Iterable[int] = (),
    ) -> SearchResult:
        """The k turns of `user_id` that best answer `query`, with per-retriever scores.

        `now` is the question's date (relative expressions resolve against it; default:
        the clock). `time_window` overrides the window parsed from the query. In memstream
        mode the window adds rankings restricted to it (time_mode="boost") or drops every
        turn outside it (time_mode="filter"). `exclude`: turn ids left out before ranking.
        """
        started = time.perf_counter()
        time_mode = time_mode or self.time_mode
        query = check_search(user_id, query, k, mode, time_mode, can_embed=self.embedder is not None, index_name="retriever")
        index = self._users.get(user_id)
        if index is None:
            self.store.require_user(user_id)  # unknown user: a clear error; known but empty: no hits
        return fused_search(
            self, index, user_id, query, k, now=now, conversation_id=conversation_id, time_window=time_window,
            mode=mode, time_mode=time_mode, embed_query=self._embed_query, fetch_turns=self.store.get_turns,
            lock=index.lock if index is not None else None, started=started, exclude=frozenset(exclude),
        )

    def _embed_query(self, query: str) -> np.ndarray:
        return self.queries.vector(query)

    def prime_query_cache(self, queries: Sequence[str], vectors: np.ndarray) -> None:
        self.queries.prime(queries, vectors)

    def speakers(self, user_id: str) -> set[str]:
        """The speaker names in this user's indexed turns."""
        # Without the lock, which every chat's adds and searches queue on: copying a dict's keys is one step under
        # CPython's GIL, so a concurrent add cannot tear it.
        index = self._users.get(user_id)
        return set(index.speaker_turns) if index is not None else set()

    def search_sessions(self, user_id: str, query: str, k: int = 5, **options) -> list[SessionHit]:
        """Sessions ranked by their turns' fused scores (search_args.rank_sessions)."""
        return rank_sessions(self.search(user_id, query, k=session_search_k(k), **options).hits, k)

    def facts_of_turns(self, user_id: str, turn_ids: Iterable[int]) -> tuple[set[int], int]:
        """(ids of the indexed facts drawn from these turns, the fact id through which the index is complete): facts
        above that id are not indexed yet, so a caller that needs every fact reads those from the store."""
        # Without the lock, as speakers(): each lookup and set update is one step under the GIL. The cursor is read
        # first, so a fact indexed meanwhile is at worst read again from the store by the caller.
        through = self._cursor.fact
        index = self._users.get(user_id)
        found: set[int] = set()
        if index is not None:
            for turn_id in turn_ids:
                found.update(index.turn_facts.get(turn_id, ()))
        return found, through

    def indexed_turns_total(self) -> int:
        with self._lock:
            return sum(index.turn_count() for index in self._users.values())

    def indexed_turns(self, user_id: str) -> int:
        index = self._users.get(user_id)
        return index.turn_count() if index else 0

    def close(self) -> None:
        if self._dirty:
            self.save()
