"""How chats are scheduled: bounded admission, a worker pool, and one fair queue for the local model.

- Admission (`ChatScheduler.admit`): a chat (plain or with memory) is admitted while fewer than
  `slots + server.max_queue` chats are in flight and its key (API key's tenant, or client address on a
  keyless server) has fewer than `server.max_queue_per_key`; otherwise it is refused at once with 503 or
  429 and a Retry-After estimate, so an overloaded server answers quickly instead of queueing forever.
- Workers: each admitted chat runs on one of `server.chat_workers` threads: its store and retrieval
  work, and the call to a remote backend (which can serve many requests at once), run concurrently.
- The model queue: a backend that is not `concurrent` (the local model: one generation at a time does
  best on a CPU, and its caches are not shared) is wrapped in `ScheduledBackend`, whose `stream` waits
  for the single slot of a `FairQueue`. Waiting requests are served round-robin between keys (first
  come first served within a key), so one client's burst cannot starve another's turn. Only generation
  waits there: a memory chat's retrieval never queues behind another user's tokens.
- Cancellation and deadlines (`Run`): when a client goes away, or the request's deadline
  (`server.request_timeout_s`) passes, the run's cancel flag is set; the worker stops at the next piece
  (closing the iterator, so the memory agent keeps what was said) and a request still waiting for the
  model leaves the queue.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

from memstream.backends.base import ChatBackend, Message
from memstream.config import ServerSettings
from memstream.server.errors import APIError


class RunCancelled(Exception):
    """Raised in a worker thread whose request was cancelled (client gone, deadline) while it waited for the model."""


class DeadlineExceeded(Exception):
    """The request ran past server.request_timeout_s."""


def deadline_error(timeout_s: float) -> APIError:
    return APIError(504, f"the request took longer than {timeout_s:g}s (server.request_timeout_s) and was stopped; "
                         "for a memory chat, your message and any reply so far are kept",
                    type="server_error", code="timeout")


def client_gone() -> APIError:
    # Never read: the client is gone. 499 is the status nginx logs for it.
    return APIError(499, "the client closed the connection before the reply", code="client_closed")


@dataclass
class Run:
    """One admitted chat: its key, deadline and cancel flag (set from the event loop, read by the worker)."""

    key: str
    deadline: float  # time.monotonic()
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # "disconnect" | "deadline" once cancelled

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()


_current = threading.local()


def current_run() -> Run | None:
    """The run the calling worker thread is working for (None outside a scheduled run)."""
    return getattr(_current, "run", None)


class FairQueue:
    """One slot for the local model, handed round-robin between keys, FIFO within a key (thread side)."""

    def __init__(self, poll_s: float = 0.05):
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[object]] = {}
        self._order: deque[str] = deque()  # keys with waiters, in round-robin order
        self._busy = False
        self._granted: object | None = None
        self.poll_s = poll_s

    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._waiting.values())

    def acquire(self, key: str, cancel: threading.Event | None = None, deadline: float | None = None) -> None:
        """Block until the slot is this caller's; RunCancelled when `cancel` is set or `deadline` passes first."""
        ticket = object()
        with self._cond:
            if not self._busy and not self._order:
                self._busy = True
                return
            if key not in self._waiting:
                self._waiting[key] = deque()
                self._order.append(key)
            self._waiting[key].append(ticket)
            while self._granted is not ticket:
                late = deadline is not None and time.monotonic() >= deadline
                if late or (cancel is not None and cancel.is_set()):
                    self._withdraw(key, ticket)
                    raise RunCancelled("the request was cancelled while it waited for the model")
                self._cond.wait(self.poll_s)
            self._granted = None  # the slot stays busy: it is ours now

    def release(self) -> None:
        with self._cond:
            if not self._order:
                self._busy = False
                return
            key = self._order.popleft()
            tickets = self._waiting[key]
            self._granted = tickets.popleft()
            if tickets:
                self._order.append(key)  # the key's next request waits for its next turn
            else:
                del self._waiting[key]
            self._cond.notify_all()

    def _withdraw(self, key: str, ticket: object) -> None:
        tickets = self._waiting[key]
        tickets.remove(ticket)
        if not tickets:
            del self._waiting[key]
            self._order.remove(key)


class ScheduledBackend:
    """A backend whose generation waits for the model queue; everything else passes through.

    The memory agent calls `stream` from a worker thread; the run the thread works for (its key, deadline
    and cancel flag) decides its place in the queue and whether it gives up waiting.
    """

    def __init__(self, backend: ChatBackend, queue: FairQueue):
        self.inner = backend
        self.queue = queue
        self.name = backend.name
        self.context_window = backend.context_window

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        run = current_run()
        self.queue.acquire(run.key if run else "", run.cancel if run else None, run.deadline if run else None)
        try:
            yield from self.inner.stream(messages, **opts)
        finally:
            self.queue.release()

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return "".join(self.stream(messages, **opts))

    def count_tokens(self, text_or_messages):
        return self.inner.count_tokens(text_or_messages)

    def __getattr__(self, name: str) -> Any:  # the wrapped backend's extras (e.g. the local runner's generator)
        return getattr(self.inner, name)


class ChatScheduler:
    """Admission, workers and (for a non-concurrent backend) the model queue of one server process."""

    def __init__(self, backend: ChatBackend, settings: ServerSettings):
        self.settings = settings
        self.model = backend
        self.concurrent = bool(getattr(backend, "concurrent", False))
        self.model_queue = None if self.concurrent else FairQueue()
        self.backend: ChatBackend = backend if self.concurrent else ScheduledBackend(backend, self.model_queue)
        self.slots = settings.chat_workers if self.concurrent else 1
        self.executor = ThreadPoolExecutor(max_workers=settings.chat_workers, thread_name_prefix="memstream-chat")
        self.in_flight: dict[str, int] = {}
        self.total = 0
        self.service_s = 1.0  # running mean of a chat's duration, for Retry-After

    # -- admission (event loop) -----------------------------------------------------

    def admit(self, key: str) -> Run:
        """A Run for an admitted chat; 503 (server full) or 429 (this key's share used) with Retry-After otherwise."""
        capacity = self.slots + self.settings.max_queue
        if self.total >= capacity:
            raise APIError(503, f"the server is busy: {self.total} chats are running or queued (server.max_queue "
                                f"{self.settings.max_queue}); retry later", type="server_error", code="server_overloaded",
                           headers={"Retry-After": str(self.retry_after())})
        mine = self.in_flight.get(key, 0)
        if mine >= self.settings.max_queue_per_key:
            raise APIError(429, f"too many chats at once for this API key: {mine} running or queued "
                                f"(server.max_queue_per_key {self.settings.max_queue_per_key}); retry later",
                           code="too_many_requests", headers={"Retry-After": str(self.retry_after(mine))})
        self.in_flight[key] = mine + 1
        self.total += 1
        return Run(key=key, deadline=time.monotonic() + self.settings.request_timeout_s)

    def releaser(self, run: Run) -> Callable[[], None]:
        """A `release()` for `run`, safe to call from every exit path (it releases once), timed from now."""
        started = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.done(run, started)

        return release

    def done(self, run: Run, started: float | None = None) -> None:
        """Release an admitted run (exactly once)."""
        left = self.in_flight[run.key] - 1
        if left:
            self.in_flight[run.key] = left
        else:
            del self.in_flight[run.key]
        self.total -= 1
        if started is not None and run.reason is None:
            self.service_s = 0.9 * self.service_s + 0.1 * (time.monotonic() - started)

    def retry_after(self, ahead: int | None = None) -> int:
        """Seconds until the queue ahead has likely drained (at least 1)."""
        ahead = self.total if ahead is None else ahead
        return max(1, math.ceil(self.service_s * ahead / self.slots))

    # -- running (worker threads) ---------------------------------------------------------

    def iterate(self, run: Run, produce: Callable[[], Iterator[Any]], last_only: bool = False) -> AsyncIterator[Any]:
        """Run the iterator `produce()` returns on a worker; its items arrive here as it yields them (`last_only`:
        only its last item, for a reply sent whole: the event loop is woken once, not once per token, and the
        worker still checks for cancellation at every item).

        Stops early when the consumer stops (client gone), on `run.stop(...)` (a disconnect watcher) or at the
        run's deadline (DeadlineExceeded here); the iterator is then closed on the worker at its next item, so
        a generator's cleanup (the memory agent keeps what was said) runs there.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def work() -> None:
            _current.run = run
            try:
                if run.cancel.is_set():
                    raise RunCancelled("cancelled before it started")
                items = produce()
                last: tuple[str, Any] | None = None
                try:
                    for item in items:
                        if run.cancel.is_set():
                            last = None
                            break
                        if last_only:
                            last = ("piece", item)
                        else:
                            loop.call_soon_threadsafe(pieces.put_nowait, ("piece", item))
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
                if last is not None:
                    loop.call_soon_threadsafe(pieces.put_nowait, last)
                loop.call_soon_threadsafe(pieces.put_nowait, ("end", None))
            except Exception as exc:  # not swallowed: re-raised in the request below
                loop.call_soon_threadsafe(pieces.put_nowait, ("error", exc))
            finally:
                _current.run = None

        def on_deadline() -> None:
            run.stop("deadline")
            pieces.put_nowait(("deadline", None))

        self.executor.submit(work)
        timer = loop.call_later(max(0.0, run.deadline - time.monotonic()), on_deadline)

        async def drain() -> AsyncIterator[Any]:
            try:
                while True:
                    kind, value = await pieces.get()
                    if kind == "end":
                        return
                    if kind == "deadline" or (kind == "error" and isinstance(value, RunCancelled) and run.reason == "deadline"):
                        raise DeadlineExceeded()
                    if kind == "error":
                        raise value
                    yield value
            finally:
                timer.cancel()
                run.stop(run.reason or "done")

        return drain()

    async def call(self, run: Run, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking function on a worker for `run` (its deadline applies)."""
        async for result in self.iterate(run, lambda: iter([fn(*args)])):
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        close_backend = getattr(self.model, "close", None)  # a model in its own process (backends/process.py)
        if close_backend is not None:
            close_backend()


async def watch_disconnect(request, run: Run) -> None:
    """Stop `run` when the client disconnects (for non-streamed replies; Starlette watches streamed ones)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            run.stop("disconnect")
            return
