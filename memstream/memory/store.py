"""The durable memory store.

Invariants:
- The database is the truth. Every index (FAISS, BM25) is a cache rebuilt or caught
  up from it; a turn is committed before it is indexed.
- Every row carries `user_id` and every query filters on it: no method returns
  another user's rows.
- A session and its turns are written in one transaction, so a crash never leaves
  half a session.
- Deletes leave a tombstone in `deletions`, so index caches in other processes
  can catch up.

SQLite (WAL, foreign keys, busy timeout, BEGIN IMMEDIATE for writes) by default;
PostgreSQL through the same code by URL.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from memstream.errors import InvalidInputError, NotFoundError
from memstream.memory import overview, schema
from memstream.memory.overview import ConversationInfo
from memstream.memory.engine import DatabaseUnavailableError, StoreError, first_line, is_locked, open_engine, redact  # errors re-exported
from memstream.memory.model import Fact, NewSession, NewTurn, Session, Turn
from memstream.memory.rows import fact_of, new_turn, session_of, turn_of
from memstream.memory.statements import (EMBEDDINGS_PER_STATEMENT, INSERT_TURNS, LATEST_SESSION, LATEST_SESSION_POSITION, MAX_IDS,
                                         SESSION_POSITION, TURNS_BY_ID, facts_where, set_vectors_sql, turns_where)

from memstream.memory.validate import (  # re-exported: callers import the id and time helpers from here
    MAX_ID_LENGTH,
    MAX_SUMMARY_CHARS,
    check_id,
    check_metadata,
    check_text,
    check_time,
    check_turn_fields,
    naive_utc,
    utcnow,
)


def _given(**params: Any) -> dict[str, Any]:
    """The filters a read was given (None: not given): their names pick its prebuilt statement, their values bind it."""
    return {name: value for name, value in params.items() if value is not None}


InTransaction = Callable[[Connection, Any], None]
"""More writes run inside a store write's transaction, given its connection and its result (see MemoryStore._retry)."""


InsertHook = Callable[[Connection, "list[Turn]"], None]
"""Runs inside a write's transaction with the turns it stored (the database-resident index writes their keys)."""


class UnknownUserError(NotFoundError):
    """Nothing is stored for this user."""


class MemoryStore:
    """All reads and writes of memory rows. Thread-safe (one engine, pooled connections)."""

    def __init__(self, url: str, *, lock_retries: int = 50, echo: bool = False):
        self.url = url
        self.lock_retries = lock_retries
        self.engine = open_engine(url, echo=echo)
        # Reads are single statements: in autocommit each is one round trip (PostgreSQL), or one statement without
        # BEGIN (SQLite: a lone SELECT reads one snapshot), not BEGIN + query + ROLLBACK.
        self.reader = self.engine.execution_options(
            **({"memstream_autocommit": True} if self.engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}))
        # SQLite has one writer at a time. Left to SQLite, this process's writers would wait for each other in its
        # busy handler, which polls with sleeps of up to 100 ms: queued on a lock here, the next starts at once.
        # (Other processes still meet busy_timeout.) PostgreSQL writes run side by side.
        self.writer_lock = threading.RLock() if self.is_sqlite else nullcontext()
        # UPDATE ... FROM: PostgreSQL, and SQLite from 3.33 (older builds update row by row).
        self._update_from = not self.is_sqlite or sqlite3.sqlite_version_info >= (3, 33, 0)
        try:
            with self._write() as conn:
                schema.migrate(conn)
        except (OperationalError, DBAPIError) as exc:
            self.engine.dispose()
            raise DatabaseUnavailableError(f"cannot open database {redact(url)}: {first_line(exc)}") from exc

    @classmethod
    def from_settings(cls, settings) -> "MemoryStore":
        if settings.db_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        return Path(database) if database and database != ":memory:" else None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.writer_lock, self.engine.connect() as conn:
            conn.execution_options(memstream_write=True)  # SQLite: BEGIN IMMEDIATE (see engine.configure_sqlite)
            with conn.begin():
                yield conn

    def _retry(self, work, also: "InTransaction | None" = None):
        """Run a write transaction, retrying with jittered backoff while another writer holds the lock.
        `also(conn, result)` runs in the same transaction after `work`: what it writes commits with the write or not
        at all (the server records an Idempotency-Key's outcome this way)."""
        for attempt in range(self.lock_retries + 1):
            try:
                with self._write() as conn:
                    result = work(conn)
                    if also is not None:
                        also(conn, result)
                    return result
            except OperationalError as exc:
                if not is_locked(exc) or attempt == self.lock_retries:
                    if is_locked(exc):
                        raise StoreError(f"database stayed locked by another writer after {attempt + 1} attempts") from exc
                    raise StoreError(f"database write failed: {first_line(exc)}") from exc
                time.sleep(min(0.5, 0.005 * 2**min(attempt, 7)) * (0.5 + random.random()))
            except DBAPIError as exc:
                if is_locked(exc) and attempt < self.lock_retries:
                    time.sleep(0.01 * (1 + random.random()))
                    continue
                raise StoreError(f"database write failed: {first_line(exc)}") from exc
            except SQLAlchemyError as exc:  # every driver error leaves as a StoreError, never a raw SQLAlchemy one
                raise StoreError(f"database write failed: {first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _read(self, statement, params: dict[str, Any] | None = None) -> list:
        for attempt in (0, 1):
            try:
                with self.reader.connect() as conn:
                    return list(conn.execute(statement, params))
            except SQLAlchemyError as exc:
                # The pool is not pinged on checkout (a round trip per use): a connection the database dropped (a
                # restart) fails here, which empties the pool, and the read runs once more on a fresh connection.
                if attempt == 0 and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    continue
                raise StoreError(f"database read failed: {first_line(exc)}") from exc
        raise AssertionError("unreachable")

    # -- writes -------------------------------------------------------------------

    def ingest_sessions(self, user_id: str, new_sessions: Sequence[NewSession]) -> list[tuple[int, list[int]]]:
        """Store sessions with their turns; each session is its own transaction. Returns (session_id, turn_ids)."""
        check_id("user id", user_id)
        results = []
        for new_session in new_sessions:
            results.append(self._retry(lambda conn, s=new_session: self._insert_session(conn, user_id, s)))
        return results

    def ingest_session_batch(
        self, user_id: str, new_sessions: Sequence[NewSession], on_insert: InsertHook | None = None
    ) -> list[tuple[int, list[int]]]:
        """Store many sessions in a single transaction (bulk loads: all or nothing). `on_insert(conn, turns)` runs
        in that transaction with the stored turns (a database-resident index writes their keys there)."""
        check_id("user id", user_id)

        def work(conn: Connection) -> list[tuple[int, list[int]]]:
            stored: list[Turn] = []
            results = [self._insert_session(conn, user_id, s, stored) for s in new_sessions]
            if on_insert is not None:
                on_insert(conn, stored)
            return results

        return self._retry(work)

    def _insert_session(
        self, conn: Connection, user_id: str, new_session: NewSession, stored: list[Turn] | None = None
    ) -> tuple[int, list[int]]:
        check_id("conversation id", new_session.conversation_id)
        now = utcnow()
        started_at = check_time("session start", new_session.started_at)
        session_id = conn.execute(
            insert(schema.sessions).values(
                user_id=user_id,
                conversation_id=new_session.conversation_id,
                external_id=check_text("session external id", new_session.external_id, limit=MAX_ID_LENGTH, optional=True),
                started_at=started_at,
                metadata=check_metadata("session metadata", new_session.metadata),
            )
        ).inserted_primary_key[0]
        rows = [
            self._turn_row(user_id, new_session.conversation_id, session_id, position, turn, started_at or now, now)
            for position, turn in enumerate(new_session.turns)
        ]
        turn_ids = self._insert_turn_rows(conn, rows)
        if stored is not None:
            stored += [new_turn(turn_id, row) for turn_id, row in zip(turn_ids, rows)]
        return session_id, turn_ids

    def _turn_row(self, user_id, conversation_id, session_id, position, turn: NewTurn, default_time, now) -> dict:
        fields = check_turn_fields(turn.role, turn.text, turn.speaker, turn.event_time, turn.metadata)
        return {
            "user_id": user_id,
            "conversation_id": conversation_id,
            "session_id": session_id,
            "position": position,
            "role": fields["role"],
            "speaker": fields["speaker"],
            "text": fields["text"],
            "event_time": fields["event_time"] or default_time,
            "ingested_at": now,
            "pinned": False,
            "metadata": fields["metadata"],
        }

    def _insert_turn_rows(self, conn: Connection, rows: list[dict]) -> list[int]:
        if not rows:
            return []
        if self.is_sqlite or conn.dialect.insert_executemany_returning:
            result = conn.execute(INSERT_TURNS, rows)
            return [row[0] for row in result]
        return [conn.execute(insert(schema.turns).values(**row)).inserted_primary_key[0] for row in rows]

    def add_turns(
        self,
        user_id: str,
        conversation_id: str,
        new_turns: Sequence[NewTurn],
        session_id: int | None = None,
        on_insert: InsertHook | None = None,
        also: "InTransaction | None" = None,
    ) -> list[Turn]:
        """Append live turns to a conversation (into `session_id`, or the conversation's latest session, or a new one).
        `on_insert(conn, turns)` runs in the same transaction with the stored turns (the database-resident index);
        `also(conn, turn_ids)` after it, still in it (an Idempotency-Key's outcome; see _retry)."""
        check_id("user id", user_id)
        check_id("conversation id", conversation_id)

        def work(conn: Connection) -> list[int]:
            now = utcnow()
            if session_id is None:
                found = conn.execute(LATEST_SESSION_POSITION, {"user_id": user_id, "conversation_id": conversation_id}).first()
            else:
                found = conn.execute(SESSION_POSITION, {"session_id": session_id, "user_id": user_id}).first()
                if found is None:
                    raise NotFoundError(f"session {session_id} does not exist for user {user_id!r}")
            target, last = found if found is not None else (None, None)
            if target is None:
                first_time = next((t.event_time for t in new_turns if t.event_time), None)
                target = conn.execute(
                    insert(schema.sessions).values(
                        user_id=user_id, conversation_id=conversation_id, started_at=naive_utc(first_time) or now, metadata={}
                    )
                ).inserted_primary_key[0]
            start = 0 if last is None else last + 1
            rows = [
                self._turn_row(user_id, conversation_id, target, start + i, turn, now, now) for i, turn in enumerate(new_turns)
            ]
            stored = [new_turn(turn_id, row) for turn_id, row in zip(self._insert_turn_rows(conn, rows), rows)]
            if on_insert is not None:
                on_insert(conn, stored)
            return stored

        return self._retry(work, None if also is None else lambda conn, stored: also(conn, [t.id for t in stored]))

    def new_session(self, user_id: str, conversation_id: str, started_at: datetime | None = None, external_id: str | None = None) -> int:
        check_id("user id", user_id)
        check_id("conversation id", conversation_id)
        return self._retry(
            lambda conn: conn.execute(
                insert(schema.sessions).values(
                    user_id=user_id,
                    conversation_id=conversation_id,
                    started_at=naive_utc(started_at) or utcnow(),
                    external_id=external_id,
                    metadata={},
                )
            ).inserted_primary_key[0]
        )

    def set_session_summary(self, user_id: str, session_id: int, summary: str) -> None:
        self._retry(
            lambda conn: conn.execute(
                update(schema.sessions)
                .where(schema.sessions.c.id == session_id, schema.sessions.c.user_id == user_id)
                .values(summary=check_text("session summary", summary, limit=MAX_SUMMARY_CHARS))
            )
        )

    def set_pinned(self, user_id: str, turn_id: int, pinned: bool = True) -> bool:
        result = self._retry(
            lambda conn: conn.execute(
                update(schema.turns).where(schema.turns.c.id == turn_id, schema.turns.c.user_id == user_id).values(pinned=pinned)
            )
        )
        return result.rowcount > 0

    def set_embeddings(self, kind: str, vectors: dict[int, bytes], model: str) -> None:
        """Store embeddings (float32 bytes) for turns or facts, with the model that made them."""
        table = {"turn": schema.turns, "fact": schema.facts}[kind]
        if not vectors:
            return

        items = list(vectors.items())

        def work(conn: Connection) -> None:
            # One statement per chunk, not one per vector: this runs under the writer lock, where each statement was
            # Python to build and a release of the GIL that had to be waited back (benchmarks/gil_writes.py).
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            for start in range(0, len(items), EMBEDDINGS_PER_STATEMENT):
                chunk = items[start:start + EMBEDDINGS_PER_STATEMENT]
                if self._update_from:
                    params = [value for pair in chunk for value in pair]
                    conn.exec_driver_sql(set_vectors_sql(table.name, len(chunk), mark), (*params, model))
                else:
                    conn.exec_driver_sql(f"UPDATE {table.name} SET embedding = {mark}, embedding_model = {mark} WHERE id = {mark}",
                                         [(blob, model, item_id) for item_id, blob in chunk])

        self._retry(work)

    # -- facts ----------------------------------------------------------------------

    def add_fact(
        self,
        user_id: str,
        subject: str,
        text: str,
        source_turn_ids: Sequence[int] = (),
        valid_from: datetime | None = None,
        conversation_id: str | None = None,
        metadata: dict | None = None,
        supersede: bool = True,
        on_insert: Callable[[Connection, Fact], None] | None = None,
    ) -> Fact:
        """Store a fact. With `supersede`, an open fact on the same subject with different text is closed at
        `valid_from` (a knowledge update keeps the old fact, with its validity ended); the same text again is a
        duplicate and returns the existing fact."""
        check_id("user id", user_id)
        subject = check_text("fact subject", subject, limit=MAX_SUMMARY_CHARS).strip().lower()[:300]
        text = check_text("fact text", text, limit=MAX_SUMMARY_CHARS).strip()
        if not subject or not text:
            raise InvalidInputError("a fact needs a non-empty subject and text")
        start = check_time("fact valid_from", valid_from) or utcnow()
        metadata = check_metadata("fact metadata", metadata)

        def work(conn: Connection) -> int:
            open_facts = conn.execute(
                select(schema.facts.c.id, schema.facts.c.text).where(
                    schema.facts.c.user_id == user_id, schema.facts.c.subject == subject, schema.facts.c.valid_to.is_(None)
                )
            ).all()
            for fact_id, existing in open_facts:
                if existing.strip().lower() == text.lower():
                    return fact_id
            if supersede and open_facts:
                conn.execute(
                    update(schema.facts)
                    .where(schema.facts.c.id.in_([f[0] for f in open_facts]))
                    .values(valid_to=start)
                )
            values = dict(
                user_id=user_id, conversation_id=conversation_id, subject=subject, text=text,
                source_turn_ids=list(source_turn_ids), valid_from=start, created_at=utcnow(), metadata=metadata,
            )
            fact_id = conn.execute(insert(schema.facts).values(**values)).inserted_primary_key[0]
            if on_insert is not None:
                on_insert(conn, Fact(id=fact_id, **values))
            return fact_id

        fact_id = self._retry(work)
        return self.get_facts(user_id, ids=[fact_id])[0]

    def get_facts(
        self,
        user_id: str,
        ids: Sequence[int] | None = None,
        current_only: bool = False,
        subject: str | None = None,
        subjects: Sequence[str] | None = None,
        after_id: int | None = None,
    ) -> list[Fact]:
        """One user's facts in id order, narrowed by ids, subject(s), current validity, or ids above `after_id`."""
        params = _given(user_id=user_id, ids=None if ids is None else list(ids), after_id=after_id,
                        subject=None if subject is None else subject.strip().lower(),
                        subjects=None if subjects is None else sorted({s.strip().lower() for s in subjects}))
        return [fact_of(row) for row in self._read(facts_where(frozenset(params), current_only), params)]

    # -- reads --------------------------------------------------------------------------

    def get_turns(self, user_id: str, ids: Sequence[int]) -> list[Turn]:
        """Turns by id, in the order of `ids`; ids of other users are silently absent."""
        if not ids:
            return []
        found: dict[int, Turn] = {}
        id_list = list(ids)
        for start in range(0, len(id_list), 900):
            chunk = id_list[start : start + 900]
            rows = self._read(TURNS_BY_ID, {"user_id": user_id, "ids": chunk})
            found.update((row.id, turn_of(row)) for row in rows)
        return [found[i] for i in id_list if i in found]

    def get_turn(self, user_id: str, turn_id: int) -> Turn | None:
        turns = self.get_turns(user_id, [turn_id])
        return turns[0] if turns else None

    def list_turns(
        self,
        user_id: str,
        conversation_id: str | None = None,
        session_id: int | None = None,
        limit: int | None = None,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool = False,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[Turn]:
        """Turns in id order (`newest_first`: reversed, so `limit` keeps the newest). `after_id`/`before_id`
        bound the ids (exclusive): with `session_id` and `limit` a read of a few turns, whatever the session's length."""
        params = _given(user_id=user_id, conversation_id=conversation_id, session_id=session_id, after_id=after_id,
                        before_id=before_id, since=None if since is None else naive_utc(since),
                        until=None if until is None else naive_utc(until), limit=limit, offset=offset or None)
        return [turn_of(row) for row in self._read(turns_where(frozenset(params), newest_first), params)]

    def latest_session(self, user_id: str, conversation_id: str) -> int | None:
        """The session `add_turns` appends to when none is named (None: it would start one)."""
        rows = self._read(LATEST_SESSION, {"user_id": user_id, "conversation_id": conversation_id})
        return rows[0][0] if rows else None

    def read_sql(self, sql: str, **params: Any) -> list:
        """Rows of a read-only SQL statement (the database-resident index's own tables; bound parameters only)."""
        from sqlalchemy import text

        return self._read(text(sql).bindparams(**params) if params else text(sql))

    def recent_turns(self, user_id: str, conversation_id: str, limit: int) -> list[Turn]:
        """The last `limit` turns of a conversation, oldest first."""
        return list(reversed(self.list_turns(user_id, conversation_id, limit=limit, newest_first=True)))

    def iter_turns(self, user_id: str | None = None, after_id: int = 0, batch_size: int = 5000) -> Iterator[Turn]:
        """Every turn with id > after_id in id order, for index builds. user_id None walks all users (index caches only)."""
        last = after_id
        while True:
            statement = select(schema.turns).where(schema.turns.c.id > last).order_by(schema.turns.c.id).limit(batch_size)
            if user_id is not None:
                statement = statement.where(schema.turns.c.user_id == user_id)
            rows = self._read(statement)
            for row in rows:
                yield turn_of(row, with_embedding=True)
            if len(rows) < batch_size:
                return  # a short batch is the last: no extra query to learn that nothing follows
            last = rows[-1].id

    def embedding_of(self, kind: str, item_id: int) -> tuple[bytes | None, str | None]:
        table = {"turn": schema.turns, "fact": schema.facts}[kind]
        rows = self._read(select(table.c.embedding, table.c.embedding_model).where(table.c.id == item_id))
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def iter_facts(self, after_id: int = 0) -> Iterator[tuple[Fact, bytes | None, str | None]]:
        rows = self._read(select(schema.facts).where(schema.facts.c.id > after_id).order_by(schema.facts.c.id))
        for row in rows:
            yield fact_of(row), row.embedding, row.embedding_model

    def embedding_models(self) -> dict[str, int]:
        """How many turns were embedded by each model (to detect a model change)."""
        rows = self._read(
            select(schema.turns.c.embedding_model, func.count())
            .where(schema.turns.c.embedding_model.is_not(None))
            .group_by(schema.turns.c.embedding_model)
        )
        return {model: count for model, count in rows}

    def max_ids(self) -> dict[str, int]:
        """Highest turn id, fact id and deletion seq: what an index cache must have seen to be current."""
        turn_id, fact_id, deletion_seq = self._read(MAX_IDS)[0]
        return {"turn": int(turn_id), "fact": int(fact_id), "deletion": int(deletion_seq)}

    def deletions_after(self, seq: int) -> list[tuple[int, str, str, int]]:
        """(seq, user_id, kind, item_id) tombstones newer than seq."""
        rows = self._read(
            select(schema.deletions.c.seq, schema.deletions.c.user_id, schema.deletions.c.kind, schema.deletions.c.item_id)
            .where(schema.deletions.c.seq > seq)
            .order_by(schema.deletions.c.seq)
        )
        return [tuple(row) for row in rows]

    def sessions(self, user_id: str, conversation_id: str | None = None) -> list[Session]:
        statement = select(schema.sessions).where(schema.sessions.c.user_id == user_id).order_by(schema.sessions.c.id)
        if conversation_id is not None:
            statement = statement.where(schema.sessions.c.conversation_id == conversation_id)
        return [session_of(row) for row in self._read(statement)]

    def get_session(self, user_id: str, session_id: int) -> Session | None:
        rows = self._read(
            select(schema.sessions).where(schema.sessions.c.user_id == user_id, schema.sessions.c.id == session_id)
        )
        return session_of(rows[0]) if rows else None

    def conversations(self, user_id: str) -> list[ConversationInfo]:
        return overview.conversations(self._read, user_id)

    def users(self) -> list[str]:
        return overview.users(self._read)

    def has_user(self, user_id: str) -> bool:
        rows = self._read(select(schema.sessions.c.id).where(schema.sessions.c.user_id == user_id).limit(1))
        return bool(rows)

    def require_user(self, user_id: str) -> str:
        check_id("user id", user_id)
        if not self.has_user(user_id):
            raise UnknownUserError(f"unknown user {user_id!r}: nothing is stored for this user")
        return user_id

    def count_turns(self, user_id: str | None = None, session_id: int | None = None) -> int:
        statement = select(func.count()).select_from(schema.turns)
        if user_id is not None:
            statement = statement.where(schema.turns.c.user_id == user_id)
        if session_id is not None:
            statement = statement.where(schema.turns.c.session_id == session_id)
        return self._read(statement)[0][0]

    def stats(self, user_id: str | None = None) -> dict[str, Any]:
        """Row counts (all users, or one user's), the backend, and on SQLite the database's size on disk."""
        return overview.stats(self._read, user_id, backend=self.engine.dialect.name, sqlite_path=self.sqlite_path)

    # -- deletes ------------------------------------------------------------------------

    def delete_turn(self, user_id: str, turn_id: int) -> bool:
        def work(conn: Connection) -> bool:
            result = conn.execute(delete(schema.turns).where(schema.turns.c.id == turn_id, schema.turns.c.user_id == user_id))
            if result.rowcount:
                conn.execute(
                    insert(schema.deletions).values(user_id=user_id, kind="turn", item_id=turn_id, deleted_at=utcnow())
                )
            return result.rowcount > 0

        return self._retry(work)

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every row of one user (turns, sessions, facts), leaving tombstones for index caches."""
        check_id("user id", user_id)

        def work(conn: Connection) -> dict[str, int]:
            now = utcnow()
            counts = {}
            for kind, table in (("turn", schema.turns), ("fact", schema.facts)):
                ids = [row[0] for row in conn.execute(select(table.c.id).where(table.c.user_id == user_id))]
                if ids:
                    conn.execute(
                        insert(schema.deletions),
                        [{"user_id": user_id, "kind": kind, "item_id": i, "deleted_at": now} for i in ids],
                    )
                counts[kind + "s"] = len(ids)
            conn.execute(delete(schema.turns).where(schema.turns.c.user_id == user_id))
            conn.execute(delete(schema.facts).where(schema.facts.c.user_id == user_id))
            counts["sessions"] = conn.execute(delete(schema.sessions).where(schema.sessions.c.user_id == user_id)).rowcount
            return counts

        return self._retry(work)

    # -- export / import (memstream/memory/transfer.py holds the record format) ----------

    def export_user(self, user_id: str) -> Iterator[dict[str, Any]]:
        from memstream.memory.transfer import export_records

        return export_records(self, user_id)

    def import_records(self, user_id: str, records: Iterable[dict[str, Any]], also: "InTransaction | None" = None) -> dict[str, int]:
        from memstream.memory.transfer import import_records

        return import_records(self, user_id, records, also=also)
