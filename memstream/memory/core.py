"""`Memory`: the one object every front end opens (agent, server, TUI, CLI, integrations, benchmarks).

Invariants, kept here and nowhere else:
- The database is the truth; every index is a cache. A write commits first, then updates the caches; a delete
  or forget reaches every index before the call returns. No caller can write and forget to index.
- Writes are acknowledged in milliseconds: `add` commits, adds the lexical keys (a new turn is found by keyword
  at once) and queues the dense keys for the background indexer (memory/indexer.py). A search sees turns whose
  vectors are still pending through the lexical side, and can wait a bounded time (`wait_s`) for its user's.
  The writes' share of the queue is bounded (`retrieval.max_pending_keys`): past it a new write waits for the
  indexer, and after `retrieval.pending_wait_s` fails with BusyError having stored nothing, so writes never outrun
  the embedder. Imports and bulk ingests queue behind the writes' keys and do not count against the bound.
- Every row is validated once, at the door (memory/validate.py): what is stored can be indexed; a stored row
  that still cannot be indexed is skipped and reported (`stats()["index"]`), never allowed to stop other users
  or the next start.
- Every read and write is per user: nothing one user stores is visible to another.
- The index backend follows the database (`index_backend`): SQLite keeps FAISS + BM25 in this process (the
  cache above); PostgreSQL keeps the index in the database (retrieval/pg_index.py: pgvector + full text), where
  `add` embeds first and then commits the rows and their keys in one transaction, so every process finds them
  at once, and delete and forget cascade to the keys. Both backends share the IndexBackend protocol.

    memory = open_memory(settings)                  # or open_memory(settings, embedder=SmallEmbedder()) in tests
    memory.add("alice", "chat", [NewTurn("user", "I moved to Lisbon last spring.")])
    memory.search("alice", "where do I live?").hits
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Sequence

from memstream.errors import BusyError, InvalidInputError, MemstreamError
from memstream.memory.index_files import cache_dir_for, claim_cache_dir
from memstream.memory.indexer import Indexer
from memstream.memory.slots import WorkSlots
from memstream.memory.model import Fact, NewSession, NewTurn, Session, Turn
from memstream.memory.overview import ConversationInfo
from memstream.memory.store import InTransaction, MemoryStore
from memstream.memory.validate import check_id, check_row_id, check_sessions, check_time, check_turn_fields
from memstream.retrieval.embedder import Embedder, EmbedderCache, recorded_name
from memstream.retrieval.results import SearchResult, SessionHit
from memstream.retrieval.backend import IndexBackend
from memstream.retrieval.pg_index import PgIndex
from memstream.retrieval.retriever import Retriever
from memstream.retrieval.timeparse import TimeWindow
from memstream.retrieval.vector_index import set_faiss_threads

log = logging.getLogger(__name__)

INGEST_BATCH_TURNS = 2048  # bulk ingest commits and indexes this many turns at a time


class Memory:
    """A user-partitioned long-term memory over one database. Thread-safe. Open it with `open_memory`."""

    def __init__(self, settings, store: MemoryStore, retriever: IndexBackend | None, *, background: bool, cache_lock: IO | None = None):
        self.settings = settings
        self.store = store
        """The rows (read-only use outside memory/: writes go through this object's verbs)."""
        self.retriever = retriever
        """The indexes; None when opened without an embedder (forget and export only)."""
        self._cache_lock = cache_lock
        self._closed = False
        # PostgreSQL hands out ids before commit, so two concurrent writes can commit out of id order and a catch-up
        # in between would step over the lower id: this process writes one at a time there. SQLite commits in id
        # order (one writer), so concurrent writes only share the catch-up (the retriever's own lock).
        # The database-resident index writes keys in the write's own transaction: no cursor, nothing to serialise.
        self._in_db = bool(getattr(retriever, "writes_in_transaction", False))
        self._write_lock = contextlib.nullcontext() if store.is_sqlite or self._in_db else threading.Lock()
        self._slots = WorkSlots(settings.retrieval.work_slots)  # see RetrievalSettings.work_slots and slots.py
        self.indexer: Indexer | None = None
        if retriever is not None and background and retriever.embedder is not None and not self._in_db:
            retriever.background = True
            self.indexer = Indexer(retriever, settings.retrieval.index_batch, settings.retrieval.indexer_threads).start()

    @property
    def index_in_database(self) -> bool:
        """True when the index lives in the database (pgvector): nothing to catch up, no per-process copy."""
        return self._in_db

    # -- writes -------------------------------------------------------------------------

    def add(self, user: str, conversation: str, turns: Sequence[NewTurn], session_id: int | None = None,
            also: InTransaction | None = None, continuing: bool = False) -> list[Turn]:
        """Append turns to a conversation (into `session_id`, or its latest session, or a new one); returns them stored.

        Returns once committed and keyword-searchable; dense vectors follow in the background (in-process index),
        or are written in the same transaction (database-resident index: every process finds the turns at once).
        `also(conn, turn_ids)`: more writes committed in the same transaction (an Idempotency-Key's outcome).
        `continuing`: a later step of work already under way (a chat's reply): it goes before new work when the
        memory is busy (slots.py)."""
        turns = list(turns)
        if self._in_db:
            self._check_turns(user, conversation, turns)
            hook = self.retriever.turns_hook(user, conversation, turns, session_id)
            with self._slots.hold(continuing):
                return self.store.add_turns(user, conversation, turns, session_id=session_id, on_insert=hook, also=also)
        if not continuing and not self.index_has_room():
            # Back-pressure, outside every lock and work slot. Bad input gets its own error at once, not a wait and a 503.
            self._check_turns(user, conversation, turns)
            if not self.retriever.wait_for_room(self.settings.retrieval.max_pending_keys, self.settings.retrieval.pending_wait_s):
                raise self.index_busy()
        with self._slots.hold(continuing), self._write_lock:
            claim = getattr(self.retriever, "claim", None)  # the in-process index (None: opened without one)
            claimed: list[int] = []

            def note_ids(conn, stored: list[Turn]) -> None:
                # Claimed inside the transaction: from the commit on, other writers know these turns are this call's
                # to index, and none of them reads them back through a full catch-up (see Retriever.sync).
                claimed.extend(t.id for t in stored)
                claim(claimed)

            try:
                stored = self.store.add_turns(user, conversation, list(turns), session_id=session_id, also=also,
                                              on_insert=note_ids if claim is not None else None)
            except BaseException:
                if claimed:
                    self.retriever.release(claimed)  # rolled back: the ids may be handed out again
                raise
            self._index(stored)  # releases the claim once indexed
        return stored

    @staticmethod
    def _check_turns(user: str, conversation: str, turns: list[NewTurn]) -> None:
        """What the store checks when it writes, checked before work that must not start for bad input."""
        check_id("user id", user)
        check_id("conversation id", conversation)
        for turn in turns:
            check_turn_fields(turn.role, turn.text, turn.speaker, turn.event_time, turn.metadata)

    def index_has_room(self) -> bool:
        """False while the background indexer's backlog is at `retrieval.max_pending_keys` (a new add would wait).
        Lock-free: the server's event loop asks it. Never False with the bound off, with inline embedding, or with
        no indexer left to drain the queue (the next start re-reads it)."""
        limit = self.settings.retrieval.max_pending_keys
        if not limit or self.indexer is None or not self.indexer.alive:
            return True
        return self.retriever.queue.from_writes < limit

    def index_busy(self) -> BusyError:
        """The error of a write refused because the backlog stayed at its bound for `retrieval.pending_wait_s`."""
        limit, wait_s = self.settings.retrieval.max_pending_keys, self.settings.retrieval.pending_wait_s
        return BusyError(f"memory is indexing a backlog of {self.retriever.queue.from_writes} keys (retrieval.max_pending_keys "
                         f"{limit}) and did not catch up within {wait_s:g} s; nothing was stored, retry later",
                         retry_after_s=max(1.0, wait_s / 4))

    def new_session(self, user: str, conversation: str, started_at: datetime | None = None, external_id: str | None = None) -> int:
        return self.store.new_session(user, conversation, started_at=started_at, external_id=external_id)

    def ingest(
        self, user: str, sessions: Sequence[NewSession], *, atomic: bool = False, resume: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[int, list[int]]]:
        """Bulk load sessions (dataset importers, `memstream ingest`): committed and indexed in batches of about
        INGEST_BATCH_TURNS turns, so a long import neither holds one huge transaction nor re-indexes per session.
        `atomic`: one transaction for everything. `progress(n)` is called with the turns stored so far.
        `resume`: sessions with an external id already stored for this user and conversation are skipped, so an
        interrupted import run again stores only what is missing (their ids are not returned).

        Everything is validated before the first write: invalid input stores nothing."""
        sessions = list(sessions)
        check_id("user id", user)
        check_sessions(sessions)
        if resume:
            stored = {(s.conversation_id, s.external_id) for s in self.store.sessions(user) if s.external_id is not None}
            sessions = [s for s in sessions if s.external_id is None or (s.conversation_id, s.external_id) not in stored]
        results: list[tuple[int, list[int]]] = []
        if atomic:
            with self._write_lock:
                results = self.store.ingest_session_batch(user, sessions, on_insert=self._sessions_hook(user, sessions))
                self._index()
            if progress is not None:
                progress(sum(len(ids) for _, ids in results))
            return results
        batch: list[NewSession] = []
        size = 0
        for session in sessions:
            batch.append(session)
            size += len(session.turns)
            if size >= INGEST_BATCH_TURNS:
                results += self._ingest_batch(user, batch, progress, results)
                batch, size = [], 0
        if batch:
            results += self._ingest_batch(user, batch, progress, results)
        return results

    def _ingest_batch(self, user, batch, progress, done) -> list[tuple[int, list[int]]]:
        with self._write_lock:
            stored = self.store.ingest_session_batch(user, batch, on_insert=self._sessions_hook(user, batch))
            self._index()
        if progress is not None:
            progress(sum(len(ids) for _, ids in done) + sum(len(ids) for _, ids in stored))
        return stored

    def _sessions_hook(self, user: str, sessions: Sequence[NewSession]):
        # Database-resident index: the batch's keys, embedded now, written in the batch's transaction.
        return self.retriever.sessions_hook(user, sessions) if self._in_db else None

    def add_fact(self, user: str, subject: str, text: str, source_turn_ids: Sequence[int] = (), **fields: Any) -> Fact:
        if self._in_db:
            if not isinstance(text, str):
                raise InvalidInputError(f"fact text must be a string, got {type(text).__name__}")
            valid_from = check_time("fact valid_from", fields.get("valid_from"))
            hook = self.retriever.fact_hook(text, valid_from)
            return self.store.add_fact(user, subject, text, source_turn_ids, on_insert=hook, **fields)
        with self._write_lock:
            fact = self.store.add_fact(user, subject, text, source_turn_ids, **fields)
            self._index()
        return fact

    def set_session_summary(self, user: str, session_id: int, summary: str) -> None:
        self.store.set_session_summary(user, session_id, summary)

    def set_pinned(self, user: str, turn_id: int, pinned: bool = True) -> bool:
        return self.store.set_pinned(user, check_row_id("memory id", turn_id), pinned)

    def delete_turn(self, user: str, turn_id: int) -> bool:
        """Delete one turn; it is gone from every index of this process when this returns."""
        with self._write_lock:
            deleted = self.store.delete_turn(user, check_row_id("memory id", turn_id))
            self._index()
        return deleted

    def forget_user(self, user: str) -> dict[str, int]:
        """Delete every row of one user and their index entries."""
        with self._write_lock:
            counts = self.store.forget_user(user)
            self._index()
        return counts

    def import_records(self, user: str, records: Iterable[dict[str, Any]], also: InTransaction | None = None) -> dict[str, int]:
        """Load exported records (memory/transfer.py) into `user`: all validated first, then one transaction
        (`also(conn, counts)` writes in it too)."""
        with self._write_lock:
            counts = self.store.import_records(user, records, also=also)
            if self._in_db:
                self.retriever.sync(user_id=user)  # the imported rows' keys (an import is rare; rows and keys in two steps)
            else:
                self._index()
        return counts

    def refresh(self, through: dict[str, int] | None = None) -> int:
        """Catch the indexes up with rows other processes wrote; returns how many rows were newly indexed.
        `through`: the store's max_ids(), when the caller has just read them. The database-resident index has no
        rows to catch up: it embeds the round keys that waited for a next turn long enough (see pg_index)."""
        if self._in_db:
            return self.retriever.embed_deferred()
        with self._write_lock:
            return self._index(through=through)

    def _index(self, fresh: Sequence[Turn] = (), through: dict[str, int] | None = None) -> int:
        if self.retriever is None or self._in_db:
            return 0
        return self.retriever.sync(save=False, fresh=fresh, through=through)

    # -- reads --------------------------------------------------------------------------

    def search(
        self,
        user: str,
        query: str,
        k: int = 10,
        *,
        now: datetime | None = None,
        time_window: TimeWindow | None = None,
        mode: str = "memstream",
        conversation: str | None = None,
        time_mode: str | None = None,
        wait_s: float = 0.0,
        exclude: Sequence[int] = (),
        continuing: bool = False,
    ) -> SearchResult:
        """The k turns of `user` that best answer `query` (see Retriever.search). `wait_s`: first wait up to that long
        for this user's pending embeddings (a search right after a write that must see it densely). `exclude`: turn ids
        left out before ranking (a question's own turn)."""
        retriever = self._require_retriever()
        if time_window is not None:
            check_time("time window start", time_window.start)
            check_time("time window end", time_window.end)
        exclude = [check_row_id("excluded turn id", turn_id) for turn_id in exclude]
        if wait_s and wait_s > 0:
            retriever.wait_until_embedded(user, min(float(wait_s), 60.0))
        with self._slots.hold(continuing):
            return retriever.search(user, query, k=k, now=now, conversation_id=conversation, time_window=time_window, mode=mode, time_mode=time_mode,
                                    exclude=exclude)

    def pending_turns(self, user: str) -> set[int]:
        """Ids of `user`'s turns whose vectors the background indexer has not added yet."""
        return self._require_retriever().pending_turns(user)

    def search_sessions(self, user: str, query: str, k: int = 5, **options: Any) -> list[SessionHit]:
        return self._require_retriever().search_sessions(user, query, k=k, **options)

    def speakers(self, user: str) -> set[str]:
        return self.retriever.speakers(user) if self.retriever is not None else set()

    def get_turn(self, user: str, turn_id: int) -> Turn | None:
        return self.store.get_turn(user, check_row_id("memory id", turn_id))

    def get_turns(self, user: str, ids: Sequence[int]) -> list[Turn]:
        return self.store.get_turns(user, ids)

    def list_turns(self, user: str, conversation: str | None = None, **filters: Any) -> list[Turn]:
        return self.store.list_turns(user, conversation, **filters)

    def recent_turns(self, user: str, conversation: str, limit: int) -> list[Turn]:
        return self.store.recent_turns(user, conversation, limit)

    def get_facts(self, user: str, **filters: Any) -> list[Fact]:
        return self.store.get_facts(user, **filters)

    def sessions(self, user: str, conversation: str | None = None) -> list[Session]:
        return self.store.sessions(user, conversation)

    def get_session(self, user: str, session_id: int) -> Session | None:
        return self.store.get_session(user, session_id)

    def conversations(self, user: str) -> list[ConversationInfo]:
        return self.store.conversations(user)

    def users(self) -> list[str]:
        return self.store.users()

    def has_user(self, user: str) -> bool:
        return self.store.has_user(user)

    def require_user(self, user: str) -> str:
        return self.store.require_user(user)

    def count_turns(self, user: str | None = None, session_id: int | None = None) -> int:
        return self.store.count_turns(user, session_id=session_id)

    def export_user(self, user: str) -> Iterator[dict[str, Any]]:
        return self.store.export_user(user)

    def stats(self, user: str | None = None) -> dict[str, Any]:
        """Row counts, plus the index's state: pending dense keys, rows skipped as unindexable, indexer health."""
        result = self.store.stats(user)
        if self.retriever is not None:
            result["index"] = {
                "pending_keys": self.retriever.pending(user),
                "skipped": len(self.retriever.skipped),
                "skipped_examples": dict(list(self.retriever.skipped.items())[:5]),
                "background": self.indexer is not None,
                "indexer_alive": self.indexer.alive if self.indexer is not None else None,
                "indexer_errors": self.indexer.errors if self.indexer is not None else 0,
            }
            if user is not None:
                result["index"]["indexed_turns"] = self.retriever.indexed_turns(user)
        return result

    # -- lifecycle ----------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued dense key is embedded (True), or the timeout passed (False). In the database
        index: embed the round keys still waiting for a next turn."""
        if self._in_db:
            self.retriever.embed_deferred(older_than_s=0)
            return True
        if self.indexer is None:
            return True
        return self.indexer.flush(timeout_s)

    def close(self) -> None:
        """Drain the indexer (bounded), save the index cache when this process owns it, close the database."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._in_db:
                self._embed_deferred_before_close()
            if self.indexer is not None:
                self.indexer.stop()
            if self.retriever is not None:
                self.retriever.close()
        finally:
            self.store.close()
            if self._cache_lock is not None:
                self._cache_lock.close()

    def _embed_deferred_before_close(self) -> None:
        # As the in-process indexer drains at close: the round keys of this process's last turns get their vectors.
        try:
            self.retriever.embed_deferred(older_than_s=0)
        except MemstreamError as exc:
            log.warning("round keys left without vectors at close (the next refresh embeds them): %s", exc)

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require_retriever(self) -> IndexBackend:
        if self.retriever is None:
            raise InvalidInputError("this memory was opened without an embedder: it can forget and export, not search")
        return self.retriever


def open_memory(
    settings,
    embedder: Embedder | None = None,
    *,
    embedders: EmbedderCache | None = None,
    load_embedder: bool = True,
    index: bool = True,
    background: bool | None = None,
    cache_dir: Path | None | Literal["auto"] = "auto",
    sync: bool = True,
) -> Memory:
    """Open the memory the settings describe: the database, its indexes (caught up with it) and the indexer.

    `embedder`: use this one (tests pass a small deterministic one); otherwise the configured model is loaded
    (through `embedders`, to share one model between several opens in a process). `load_embedder=False` opens
    the index without the model (enough for forget: deletes reach the cache); `index=False` opens the rows only
    (list, stats, export). `background`: embed in a background thread (default:
    retrieval.background_indexing). `cache_dir`: "auto" persists the index cache where `cache_dir_for` says when
    no other process holds it; None keeps it in memory."""
    store = MemoryStore.from_settings(settings)
    if not index:
        return Memory(settings, store, None, background=False)
    lock = None
    try:
        r = settings.retrieval
        if embedder is None and load_embedder:
            e = settings.embedder
            embedder = (embedders or EmbedderCache()).for_settings(e)
        in_db = index_backend(settings, store) == "database"
        if cache_dir == "auto" and not in_db:
            cache_dir, lock = claim_cache_dir(cache_dir_for(settings, store))
        retriever = build_retriever(settings, store, embedder, cache_dir=None if in_db else cache_dir)
        memory = Memory(settings, store, retriever, background=r.background_indexing if background is None else background, cache_lock=lock)
        if sync and in_db:
            retriever.sync()  # rows without keys (a database from before this index): indexed once, at open
        elif sync:
            memory.refresh()
        return memory
    except BaseException:
        store.close()
        if lock is not None:
            lock.close()
        raise


def index_backend(settings, store: MemoryStore) -> str:
    """'memory' (FAISS + BM25 in process) or 'database' (pgvector + full text in PostgreSQL), as the settings say."""
    chosen = settings.retrieval.index_backend
    if chosen == "auto":
        return "memory" if store.is_sqlite else "database"
    if chosen == "database" and store.is_sqlite:
        raise InvalidInputError("retrieval.index_backend = 'database' needs PostgreSQL (with pgvector); SQLite uses 'memory'")
    return chosen


def build_retriever(settings, store: MemoryStore, embedder: Embedder | None, *, cache_dir: Path | None = None, sync: bool = False) -> IndexBackend:
    """The index the settings describe over `store` (open_memory's part; index tests use it directly)."""
    r = settings.retrieval
    # The ranking options both backends share (the same fusion code reads them).
    options = dict(
        model_name=embedder.name if embedder is not None else recorded_name(settings.embedder.model, settings.embedder.runtime), ann_threshold=r.ann_threshold,
        rrf_k=r.rrf_k, candidates=r.candidates, round_neighbours=r.round_neighbours, dense_kinds=tuple(r.dense_kinds), round_vectors=r.round_vectors,
        session_decomposition=r.session_decomposition, fact_expansion=r.fact_expansion, time_expansion=r.time_expansion,
        time_mode=r.time_mode, time_weight=r.time_weight,
    )
    if index_backend(settings, store) == "database":
        index = PgIndex(store, embedder, **options)
        if sync:
            index.sync()
        return index
    set_faiss_threads(r.faiss_threads)
    retriever = Retriever(store, embedder, cache_dir=cache_dir, **options)
    if sync:
        retriever.sync()
    return retriever
