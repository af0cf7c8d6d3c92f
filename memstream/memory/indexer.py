"""The background indexer: embeds the dense keys the write path queued, in batches across turns and users.

One thread or several (`retrieval.indexer_threads`): each takes its own batch and runs the model on it with one
thread of its own, so two batches embed side by side on two cores without the spinning that the model's own
intra-op threads cost on a busy machine (RetrievalSettings.indexer_threads has the measurements).

A write (`Memory.add`) commits its rows, adds their lexical keys and queues their dense keys, then returns;
the indexer threads drain the queue. It holds no state of its own: the queue lives in the retriever, and after a
crash the next start re-reads every turn newer than the saved index (the database is the truth), so nothing
is lost. A key that cannot be embedded is skipped and reported (`Retriever.skipped`), never retried forever.
"""

from __future__ import annotations

import logging
import threading
import time

from memstream.errors import MemstreamError
from memstream.retrieval.retriever import Retriever

log = logging.getLogger(__name__)


THREAD_NAME = "memstream-indexer"


def on_indexer_thread() -> bool:
    """Whether the caller runs on a background indexer thread (an embedder told apart from query embedding)."""
    return threading.current_thread().name.startswith(THREAD_NAME)


class Indexer:
    def __init__(self, retriever: Retriever, batch_keys: int = 256, threads: int = 1):
        self.retriever = retriever
        self.batch_keys = batch_keys
        self.errors = 0
        self.last_error: str | None = None
        self.embedded = 0
        self._count_lock = threading.Lock()  # the counters above, updated by every thread
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"{THREAD_NAME}-{n}", daemon=True) for n in range(threads)]

    def start(self) -> "Indexer":
        for thread in self._threads:
            thread.start()
        return self

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.retriever.embed_pending(self.batch_keys)
            except MemstreamError as exc:  # the database refused the vectors, say: report, back off, go on
                with self._count_lock:
                    self.errors += 1
                    self.last_error = str(exc)
                log.error("background indexing failed (will retry): %s", exc)
                self._stop.wait(1.0)
                continue
            with self._count_lock:
                self.embedded += done
            if done == 0:
                self.retriever.wait_for_work(0.5)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued key is embedded; False if the timeout passed first."""
        if not self.alive:
            return self.retriever.pending() == 0
        return self.retriever.wait_until_embedded(None, 1e9 if timeout_s is None else timeout_s)

    def stop(self, drain_s: float = 30.0) -> None:
        """Drain what is queued (bounded), then stop the thread. What is left is re-read from the database next start."""
        deadline = time.monotonic() + drain_s
        self.flush(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(1.0, deadline - time.monotonic()))
