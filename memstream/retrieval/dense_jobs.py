"""Dense keys waiting for their embedding, and the one routine that embeds and adds them.

The write path adds a turn's lexical keys at once and queues its dense keys here; the background indexer
(memstream/memory/indexer.py) drains the queue in batches across turns and users. A job remembers which
`UserIndex` object it was made for, so a job whose user was forgotten, or whose turn was deleted while it
waited, is dropped instead of resurrecting a key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from memstream.retrieval import keys as keymod
from memstream.retrieval.embedder import Embedder, from_bytes

if TYPE_CHECKING:
    from memstream.retrieval.user_index import UserIndex

log = logging.getLogger(__name__)


@dataclass(slots=True)  # an import queues three per turn: a third less memory each without a __dict__
class DenseJob:
    index: "UserIndex"
    user_id: str
    kind: str
    """Key kind: turn, round, statement, fact."""
    item_id: int
    """Turn id (fact id for fact keys)."""
    text: str
    origin: int
    """Smallest turn (or fact) id of the batch that made this job: a cache saved while it waits resumes there."""
    stored: bytes | None = field(default=None, repr=False)
    """The vector the database already holds for this item with this model (turn and fact keys), if any."""
    superseded: bool = field(default=False, repr=False)
    """A newer job for the same key was queued before this one was taken (a round key refreshed while it waited)."""
    deferred: bool = False
    """A round key whose later neighbours have not arrived yet (the newest turn of a live conversation): its text
    changes with the next turn, so it is embedded only when nothing else waits. Encoded round keys only: a pooled one
    costs no model pass."""
    parts: tuple[tuple[int, str], ...] = ()
    """A pooled key (a round key with retrieval.round_vectors 'statements'): its vector is `keys.pool` of these keys'
    vectors (key id, text), not a model pass over `text`."""
    part_vectors: list[np.ndarray | None] | None = field(default=None, repr=False)
    """The parts' vectors already in the index, looked up under the retriever's lock just before embedding (the rest
    are embedded with the batch, once per text)."""
    batch_no: int = field(default=0, repr=False)
    """Which batch took it (DenseQueue.take numbers them): a batch waits for earlier batches' parts, never later ones'."""
    bulk: bool = False
    """Queued by a catch-up (an import, a bulk ingest, other processes' writes), not by a write of this process:
    embedded after the writes' keys, and not counted against the write path's backlog bound, so one tenant's import
    neither delays another's new turns nor makes their writes wait."""

    @property
    def key(self) -> int:
        return keymod.key_id(self.item_id, self.kind)

    def is_live(self, users: dict[str, "UserIndex"]) -> bool:
        """Still wanted: the user's index is the one the job was made for, and the turn or fact is still in it."""
        if users.get(self.user_id) is not self.index:
            return False
        if self.kind == "fact":
            return self.item_id in self.index.fact_turns
        return self.item_id in self.index.turn_time


def _texts(job: DenseJob) -> list[str]:
    """What the model must embed for this job: its text, or a pooled key's parts not yet in the index."""
    if not job.parts:
        return [job.text]
    known = job.part_vectors or [None] * len(job.parts)
    return [text for (_key, text), vector in zip(job.parts, known) if vector is None]


def _vector(job: DenseJob, by_text: dict[str, np.ndarray]) -> np.ndarray:
    if not job.parts:
        return by_text[job.text]
    known = job.part_vectors or [None] * len(job.parts)
    return keymod.pool([by_text[text] if vector is None else vector for (_key, text), vector in zip(job.parts, known)])


def embed_jobs(embedder: Embedder, dim: int, jobs: Sequence[DenseJob]) -> tuple[list[np.ndarray | None], dict[int, str]]:
    """Vectors for these jobs (reusing stored ones), and {position: reason} for jobs that could not be embedded.

    One bad text must not cost the batch: when the batched call fails, each job is tried alone."""
    vectors: list[np.ndarray | None] = [from_bytes(job.stored, dim) if job.stored is not None else None for job in jobs]
    todo = [p for p, v in enumerate(vectors) if v is None]
    failed: dict[int, str] = {}
    if not todo:
        return vectors, failed
    try:
        # Equal texts are embedded once (a session's first exchange gives the question and the reply one round text;
        # a pooled round's parts are the statement keys of the same batch).
        unique = list(dict.fromkeys(text for p in todo for text in _texts(jobs[p])))
        embedded = embedder.embed(unique) if unique else []
        if len(embedded) != len(unique):
            raise ValueError(f"the embedder returned {len(embedded)} vectors for {len(unique)} texts")
        by_text = dict(zip(unique, embedded))
        for p in todo:
            vectors[p] = _vector(jobs[p], by_text)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        log.warning("embedding a batch of %d keys failed (%s); embedding them one by one", len(todo), exc)
        for p in todo:
            try:
                texts = _texts(jobs[p])
                vectors[p] = _vector(jobs[p], dict(zip(texts, embedder.embed(texts) if texts else [])))
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as one:
                failed[p] = f"{type(one).__name__}: {str(one)[:200]}"
    return vectors, failed


def reuse_indexed_parts(jobs: Sequence[DenseJob]) -> None:
    """Look up the pooled keys' parts already in their user's index (call under the retriever's lock): those vectors
    are reused, and only the others (statement keys still waiting, usually in the same batch) are embedded."""
    for job in jobs:
        if job.parts:
            with job.index.lock:
                statements = job.index.dense.get("statement")
                job.part_vectors = [statements.vector(key) if statements is not None else None for key, _text in job.parts]


def add_vectors(jobs: Sequence[DenseJob], vectors: Sequence[np.ndarray | None], failed: dict[int, str],
                users: dict[str, "UserIndex"], skip: Callable[[str, str], None]) -> bool:
    """Put the embedded jobs' vectors in their users' indexes (call under the retriever's lock), replacing a key's
    older vector; `skip` reports the failed ones. Returns whether any index changed."""
    groups: dict[tuple[int, str], tuple["UserIndex", str, dict[int, np.ndarray]]] = {}
    for position, (job, vector) in enumerate(zip(jobs, vectors)):
        if position in failed:
            skip(f"{job.kind} key of {'fact' if job.kind == 'fact' else 'turn'} {job.item_id}", failed[position])
            continue
        if vector is None or job.superseded or not job.is_live(users):
            continue  # deleted or forgotten while it waited, or a newer text of the key was queued meanwhile
        entry = groups.setdefault((id(job.index), job.kind), (job.index, job.kind, {}))
        entry[2][job.key] = vector
    for index, kind, by_key in groups.values():
        keys = np.fromiter(by_key.keys(), dtype=np.int64, count=len(by_key))
        with index.lock:
            target = index.dense_index(kind)
            target.remove(keys)
            target.add(keys, np.stack(list(by_key.values())))
    return bool(groups)


class DenseQueue:
    """The dense keys waiting for vectors, in order, and the condition searches and the indexer wait on.

    Shares the retriever's lock, so a batch leaves the queue, is embedded outside it, and lands in the index
    while `pending()` counts it the whole time (a search that waits for a user's keys sees them land). Several
    indexer threads may each have a batch out at once; a job superseded while out is not added (`put`).

    Three lines, each taken only when the ones before it are empty: the keys of this process's writes; bulk keys
    (catch-ups, imports); deferred jobs (round keys still waiting for their next turn): on an idle indexer those
    are embedded at once, as before; on a busy one the next turn usually supersedes them first, and the newest
    round of every live chat is embedded once instead of twice."""

    def __init__(self, lock: threading.RLock):
        self._jobs: deque[DenseJob] = deque()
        self._bulk: deque[DenseJob] = deque()
        self._later: deque[DenseJob] = deque()
        self._waiting: dict[tuple[int, int], DenseJob] = {}  # (id(user index), key) -> its newest waiting job
        self._in_flight: dict[tuple[int, int], DenseJob] = {}  # (id(user index), key) -> the job being embedded
        self._batches = 0
        self._users: Counter[str] = Counter()
        self.from_writes = 0
        """Keys of this process's writes (not bulk) waiting or being embedded: what the write path's bound counts. An
        int, so a caller without the lock (the server's event loop) can read it."""
        self.settled = threading.Condition(lock)

    def put(self, jobs: Iterable[DenseJob]) -> None:
        """Caller holds the lock."""
        jobs = list(jobs)
        for job in jobs:
            # Under load a turn's round key is often re-queued (its neighbour arrived) before the first text was
            # embedded: only the newest text of a key is worth embedding.
            slot = (id(job.index), job.key)
            older = self._waiting.get(slot)
            if older is not None:
                older.superseded = True
                self._forget(older)
            flying = self._in_flight.get(slot)
            if flying is not None:
                # Being embedded by one indexer thread while this newer text may be taken by another, which could
                # finish first: the older vector must not land after the newer one (counted until its batch is done).
                flying.superseded = True
            self._waiting[slot] = job
            (self._later if job.deferred else self._bulk if job.bulk else self._jobs).append(job)
        self._users.update(job.user_id for job in jobs)
        self.from_writes += sum(1 for job in jobs if not job.bulk)
        self.settled.notify_all()

    def take(self, max_keys: int) -> list[DenseJob]:
        with self.settled:
            batch: list[DenseJob] = []
            self._batches += 1
            for line in (self._jobs, self._bulk, self._later):
                while line and len(batch) < max_keys:
                    job = line.popleft()
                    if job.superseded:
                        continue
                    slot = (id(job.index), job.key)
                    if self._waiting.get(slot) is job:
                        del self._waiting[slot]
                    self._in_flight[slot] = job
                    job.batch_no = self._batches
                    batch.append(job)
                if batch:
                    break  # the deferred line only when nothing else waits
            return batch

    def wait_for_parts(self, batch: list[DenseJob], timeout_s: float) -> None:
        """Wait (caller holds the lock) until no pooled job of `batch` has a part in an earlier batch still being
        embedded by another indexer thread: then its vector is in the index and is reused, not embedded again (a
        round refreshed by the next turn while its own turn's statement was still out). Only earlier batches are
        waited for, so two batches never wait for each other; a part in a later one is embedded here too."""
        deadline = time.monotonic() + timeout_s
        while any(flying.batch_no < job.batch_no for job in batch for key, _text in job.parts
                  if (flying := self._in_flight.get((id(job.index), key))) is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.settled.wait(left)

    def _forget(self, job: DenseJob) -> None:
        self.from_writes -= not job.bulk
        self._users[job.user_id] -= 1
        if self._users[job.user_id] <= 0:
            del self._users[job.user_id]

    def done(self, batch: list[DenseJob]) -> None:
        with self.settled:
            for job in batch:
                slot = (id(job.index), job.key)
                if self._in_flight.get(slot) is job:
                    del self._in_flight[slot]
                self._forget(job)
            self.settled.notify_all()

    def pending(self, user_id: str | None = None) -> int:
        with self.settled:
            return self._users.get(user_id, 0) if user_id is not None else sum(self._users.values())

    def pending_turns(self, user_id: str) -> set[int]:
        """Ids of this user's turns with a key still waiting (or being embedded)."""
        with self.settled:
            return {job.item_id for job in (*self._jobs, *self._bulk, *self._later, *self._in_flight.values())
                    if job.user_id == user_id and job.kind != "fact" and not job.superseded}

    def resume_point(self, facts: bool, cursor: int) -> int:
        """The cursor a saved index may claim: never past a key still waiting (resume from the batch that queued it)."""
        waiting = [job.origin - 1 for job in (*self._jobs, *self._bulk, *self._later, *self._in_flight.values()) if (job.kind == "fact") == facts and not job.superseded]
        return min([cursor, *waiting])

    def wait_until_empty(self, user_id: str | None, timeout_s: float) -> bool:
        """Block until this user's (None: everyone's) keys are in the index, or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        with self.settled:
            while self._users.get(user_id, 0) if user_id is not None else self._users:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.settled.wait(left)
            return True

    def wait_until_below(self, limit: int, timeout_s: float) -> bool:
        """Block until fewer than `limit` keys of writes wait (everyone's; bulk keys do not count), or the timeout
        passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self.settled:
            while self.from_writes >= limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.settled.wait(left)
            return True

    def wait_for_work(self, timeout_s: float) -> bool:
        with self.settled:
            if not self._waiting:
                self.settled.wait(timeout_s)
            return bool(self._waiting)
