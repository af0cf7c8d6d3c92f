"""`Idempotency-Key` for the memory write routes (add, import): a retried write stores once.

A client that got no answer (timeout, dropped connection, server killed) cannot know whether its
write was stored; it retries with the same key and gets the first answer instead of a second copy.

Keys live in the memory database (table `server_idempotency`, owned by the server), per tenant, so
every server process on one database sees them. The first request with a key claims it (a pending
row), runs, and records its answer; a repeat with the same route, user and body gets that answer
(header `Idempotent-Replayed: true`); a repeat while the first still runs, or with a different body,
gets 409. A write that failed with an error releases its key, so a retry runs again. The write records
its outcome (the stored turn ids, the import counts) on the key's row in its own transaction, so a
write either committed with its outcome or not at all: a claim left pending by a process that died is
taken over after `server.request_timeout_s`, and the retry either replays the committed outcome
(rebuilt from the database) or, when nothing committed, runs the write. Keys are kept for KEEP_HOURS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, and_, delete, insert, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from memstream.memory.schema import lock_schema
from memstream.memory.store import utcnow
from memstream.server.errors import APIError

MAX_KEY_CHARS = 200
KEEP_HOURS = 24
PURGE_EVERY = 1000

_metadata = MetaData()
keys_table = Table(
    "server_idempotency",
    _metadata,
    Column("tenant", String(80), primary_key=True),  # "" on a keyless server
    Column("key", String(MAX_KEY_CHARS), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer),  # null while the first request runs
    Column("response", Text),
    Column("claimed_at", DateTime, nullable=False),
    Column("outcome", Text),  # JSON, written in the write's own transaction (see Claim.record)
)


@dataclass(frozen=True)
class Replay:
    """The key was used before: answer this instead of writing."""

    status: int
    body: dict | None
    """The recorded answer; None when only the outcome committed (the process died before answering)."""
    outcome: Any = None


def fingerprint(route: str, user: str, body: bytes) -> str:
    return hashlib.sha256(b"\0".join([route.encode(), user.encode(), body])).hexdigest()


def check_key(key: str) -> str:
    if not key.strip() or len(key) > MAX_KEY_CHARS or any(ord(c) < 32 for c in key):
        raise APIError(400, f"Idempotency-Key must be 1..{MAX_KEY_CHARS} printable characters", param="Idempotency-Key",
                       code="invalid_value")
    return key


class IdempotencyKeys:
    """Blocking calls (run them on a thread); `engine` is the memory store's."""

    def __init__(self, engine: Engine, stale_after_s: float):
        self.engine = engine
        self.stale_after = timedelta(seconds=stale_after_s)
        self.claims = 0
        with self._write() as conn, conn.begin():
            lock_schema(conn, "idempotency")  # servers started together on a fresh database: one creates the table
            _metadata.create_all(conn, checkfirst=True)
            if "outcome" not in {c["name"] for c in inspect(conn).get_columns(keys_table.name)}:
                conn.execute(text(f"ALTER TABLE {keys_table.name} ADD COLUMN outcome TEXT"))  # a table made before outcomes

    def _write(self):
        conn = self.engine.connect()
        conn.execution_options(memstream_write=True)  # SQLite: BEGIN IMMEDIATE, as the store's writes
        return conn

    def claim(self, tenant: str, key: str, print_: str) -> Replay | None:
        """None: this request owns the key and must run, then `finish` or `release`. Otherwise what to replay."""
        self.claims += 1
        if self.claims % PURGE_EVERY == 0:
            self.purge()
        now = utcnow()
        try:
            with self._write() as conn, conn.begin():
                conn.execute(insert(keys_table).values(tenant=tenant, key=key, fingerprint=print_, claimed_at=now))
            return None
        except IntegrityError:
            pass
        where = and_(keys_table.c.tenant == tenant, keys_table.c.key == key)
        with self._write() as conn, conn.begin():
            row = conn.execute(select(keys_table).where(where)).first()
            if row is None:  # released in between: claim again
                conn.execute(insert(keys_table).values(tenant=tenant, key=key, fingerprint=print_, claimed_at=now))
                return None
            if row.fingerprint != print_:
                raise APIError(409, "this Idempotency-Key was used for a different request (route, user or body); "
                                    "use a new key for a new write", param="Idempotency-Key", code="idempotency_key_reused")
            if row.status is not None:
                return Replay(row.status, json.loads(row.response))
            if row.outcome is not None:  # the write committed; its process died before it could answer
                return Replay(201, None, json.loads(row.outcome))
            if now - row.claimed_at < self.stale_after:
                raise APIError(409, "a request with this Idempotency-Key is still running; retry after it ends",
                               param="Idempotency-Key", code="idempotency_key_in_progress", headers={"Retry-After": "1"})
            # The process that claimed it died: take the claim over.
            conn.execute(update(keys_table).where(where, keys_table.c.claimed_at == row.claimed_at).values(claimed_at=now))
            return None

    def recorder(self, tenant: str, key: str):
        """The `also` hook for a store write: records its outcome on the key's row inside the write's transaction."""

        def record(conn: Connection, outcome: Any) -> None:
            conn.execute(update(keys_table).where(keys_table.c.tenant == tenant, keys_table.c.key == key)
                         .values(outcome=json.dumps(outcome)))

        return record

    def finish(self, tenant: str, key: str, status: int, body: dict) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(update(keys_table).where(keys_table.c.tenant == tenant, keys_table.c.key == key)
                         .values(status=status, response=json.dumps(body)))

    def release(self, tenant: str, key: str) -> None:
        with self._write() as conn, conn.begin():
            # Only a key whose write did not commit: a committed outcome must keep answering retries.
            conn.execute(delete(keys_table).where(keys_table.c.tenant == tenant, keys_table.c.key == key,
                                                  keys_table.c.status.is_(None), keys_table.c.outcome.is_(None)))

    def purge(self) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(delete(keys_table).where(keys_table.c.claimed_at < utcnow() - timedelta(hours=KEEP_HOURS)))
