"""Background enrichment: session summaries, facts and event times, off the write path.

A single worker thread drains a queue. A failing job is counted and logged, never raised into
the chat turn, and never loses the turn (which is committed before the job is queued).
`drain()` waits for the queue; `close()` drains then stops the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from memstream.backends.base import ChatBackend
from memstream.agent.event_time import event_facts
from memstream.agent.facts import extract_facts
from memstream.memory.core import Memory
from memstream.agent.summaries import summarize_session

log = logging.getLogger(__name__)

SUMMARY_EVERY = 8  # turns added to a session between summary refreshes
SUMMARY_MAX_TURNS = 200
"""A summary is made from the session's last this many turns (a model sees the last 6000 characters of those):
a live conversation can stay one session for thousands of turns, and each refresh must not read them all."""


@dataclass
class EnrichJob:
    user_id: str
    conversation_id: str
    turn_ids: list[int]
    session_id: int | None = None


@dataclass
class EnrichStats:
    jobs: int = 0
    failures: int = 0
    facts: int = 0
    summaries: int = 0
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


def enrich_turns(store: Memory, job: EnrichJob, backend: ChatBackend | None = None) -> tuple[int, int]:
    """Extract facts from the job's turns and refresh the session summary when due; returns (facts, summaries)."""
    facts_added = 0
    summaries = 0
    for turn in store.get_turns(job.user_id, job.turn_ids):
        for fact in extract_facts(turn, backend):
            store.add_fact(job.user_id, fact.subject, fact.text, [turn.id], valid_from=turn.event_time, conversation_id=turn.conversation_id)
            facts_added += 1
        for subject, text, metadata in event_facts(turn):
            # Relative dates resolved against when the turn was said: the event's own time (agent/event_time.py).
            store.add_fact(job.user_id, subject, text, [turn.id], valid_from=turn.event_time, conversation_id=turn.conversation_id, metadata=metadata)
            facts_added += 1
    if job.session_id is not None:
        count = store.count_turns(job.user_id, session_id=job.session_id)
        if count and (count % SUMMARY_EVERY == 0 or count <= 2):
            recent = store.list_turns(job.user_id, session_id=job.session_id, limit=SUMMARY_MAX_TURNS, newest_first=True)
            store.set_session_summary(job.user_id, job.session_id, summarize_session(list(reversed(recent)), backend))
            summaries += 1
    return facts_added, summaries


class Enricher:
    def __init__(
        self,
        store: Memory,
        backend: ChatBackend | None = None,
        on_done: Callable[[EnrichJob], None] | None = None,
        work: Callable[[Memory, EnrichJob, ChatBackend | None], tuple[int, int]] = enrich_turns,
    ):
        self.store = store
        self.backend = backend
        self.on_done = on_done
        self.work = work
        self.stats = EnrichStats()
        self._queue: queue.Queue[EnrichJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="memstream-enrich", daemon=True)
        self._thread.start()

    def submit(self, job: EnrichJob) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the enrichment worker is closed")
        self._queue.put(job)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self.stats.jobs += 1
                facts, summaries = self.work(self.store, job, self.backend)
                self.stats.facts += facts
                self.stats.summaries += summaries
                if self.on_done is not None:
                    self.on_done(job)
            except Exception as exc:  # a failed job must not kill the worker; it is counted and logged
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.stats.errors = (self.stats.errors + [self.stats.last_error])[-20:]
                log.warning("enrichment job failed for user %s: %s", job.user_id if job else "?", self.stats.last_error)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        self._queue.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=60)
