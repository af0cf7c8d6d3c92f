"""The local model in a process of its own, so its decode loop never takes the server's GIL.

Eager PyTorch decode of a small model is mostly Python (a module call per layer and op per
token). In the server's process that Python holds the GIL beside the request threads: a GIL
profile of `memstream serve` during one long generation had the generation thread holding it in
28% of the samples, and a memory search's p95 rose from 3.2 to 12.1 ms. `ProcessBackend` runs
the model in a child interpreter with one fewer torch thread than the machine has
cores, so the two share only CPU time, and the server's requests keep a core.

The child loads the model (as `make_backend` would in-process) and answers over one pipe:

    parent -> child  ("stream", rid, messages, opts) | ("cancel", rid) | ("close",)
    child -> parent  ("ready", name, context_window, tokenizer) | ("failed", error)
                     ("started", rid) | ("piece", rid, text) | ("end", rid) | ("error", rid, error)

Generations run one at a time in the child, in arrival order (the server's fair queue already
orders them). `stream` returns once the generation has started, or raises what the child's
`stream` raised (a too-long prompt fails at the call, as in-process). Closing the iterator early
cancels the generation at its next token. Token counting runs in the parent on a copy of the
model's tokenizer, sent with "ready", so a prompt budget never waits for the child. A child
that dies fails the requests it was serving with BackendError; the next call starts a new one.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import queue
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Iterator, Sequence

from memstream.backends.base import BackendError, Message, check_messages, load_failure, options_from
from memstream.config import usable_cores

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # a first start converts the GGUF weights: minutes on a slow disk


def default_threads() -> int:
    """Torch threads for the model process: every core but one (for the server), at least one."""
    return max(1, usable_cores() - 1)


def _portable(exc: BaseException) -> BaseException:
    """The error itself when it pickles (ContextOverflowError and friends), else a BackendError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send a description instead
        return BackendError(f"{type(exc).__name__}: {exc}")


def serve_model(conn, settings, attention, threads: int) -> None:
    """The child's main: load the model, then generate on request until the pipe closes."""
    import torch

    from memstream.backends.models import make_backend

    torch.set_num_threads(threads)
    try:
        backend = make_backend(settings, attention)
        conn.send(("ready", backend.name, backend.context_window, backend.local.tokenizer))
    except BaseException as exc:  # sent to the parent, which raises it from every call
        conn.send(("failed", _portable(load_failure(settings.model, exc))))
        return
    send_lock = threading.Lock()
    cancelled: set[int] = set()
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def generate() -> None:
        while (job := jobs.get()) is not None:
            rid, messages, opts = job
            try:
                if rid in cancelled:
                    send(("end", rid))
                    continue
                try:
                    pieces = backend.stream(messages, **opts)
                except Exception as exc:  # noqa: BLE001 - the caller's error, raised in the parent
                    send(("error", rid, _portable(exc)))
                    continue
                send(("started", rid))
                try:
                    for piece in pieces:
                        if rid in cancelled:
                            break
                        send(("piece", rid, piece))
                finally:
                    pieces.close()
                send(("end", rid))
            except (BrokenPipeError, EOFError, OSError):
                return  # the parent is gone
            except Exception as exc:  # noqa: BLE001 - a failed generation fails its request only
                send(("error", rid, _portable(exc)))
            finally:
                cancelled.discard(rid)

    worker = threading.Thread(target=generate, name="generate", daemon=True)
    worker.start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "stream":
            jobs.put(message[1:])
        elif message[0] == "cancel":
            cancelled.add(message[1])
        elif message[0] == "close":
            break
    jobs.put(None)


class _Child:
    """One model process, its pipe, and the requests waiting on it."""

    def __init__(self, settings, attention, threads: int):
        # A fresh interpreter (`python -m memstream.backends.process FD`), not multiprocessing's spawn: that
        # re-imports the caller's main module, which a user's script may not guard.
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "memstream.backends.process", str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send((settings, attention, threads))
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.info: tuple[str, int, Any] | None = None
        self.pending: dict[int, queue.SimpleQueue] = {}
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="model-process-reader", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.error is None  # the reader sets it when the pipe closes: no system call per token count

    def _read(self) -> None:
        try:
            first = self.conn.recv()
            if first[0] == "failed":
                self._fail(first[1])
                return
            self.info = first[1:]
            self.ready.set()
            while True:
                kind, rid, *rest = self.conn.recv()
                with self.lock:
                    waiting = self.pending.get(rid)
                if waiting is not None:  # else a cancelled request's last pieces
                    waiting.put((kind, *rest))
        except (EOFError, OSError):
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self._fail(BackendError(f"the model process exited (exit code {code}); "
                                    "the next request starts it again"))

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()
        with self.lock:
            waiting = list(self.pending.values())
        for q in waiting:
            q.put(("error", error))

    def send(self, message: tuple) -> None:
        with self.lock:
            try:
                self.conn.send(message)
            except (BrokenPipeError, OSError) as exc:
                raise BackendError(f"the model process is gone: {exc}") from exc

    def open(self, rid: int) -> queue.SimpleQueue:
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            self.pending[rid] = q
        if self.error is not None:  # failed between the caller's check and now
            q.put(("error", self.error))
        return q

    def done(self, rid: int) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self.send(("close",))
        except BackendError:
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)
        self.conn.close()


class ProcessBackend:
    """ChatBackend whose local model runs in a child process (see the module docstring)."""

    def __init__(self, name: str, settings, attention, threads: int | None = None, start_timeout_s: float = START_TIMEOUT_S):
        from memstream.backends.models import _import_loaders

        _import_loaders()  # the tokenizer arrives pickled: its classes are imported here, not in the reader thread
        self.name = name
        self.threads = threads or default_threads()
        self.start_timeout_s = start_timeout_s
        self._settings, self._attention = settings, attention
        self._ids = itertools.count(1)
        self._start_lock = threading.Lock()
        self._closed = False
        self._child = _Child(settings, attention, self.threads)

    # -- the child ------------------------------------------------------------------------

    def _running(self) -> _Child:
        """The ready child, started again if the last one died; raises the load's error."""
        with self._start_lock:
            if self._closed:
                raise BackendError(f"the {self.name} backend is closed")
            child = self._child
            if child.ready.is_set() and not child.alive and child.info is not None:
                log.warning("model process for %s exited; starting it again", self.name)
                child = self._child = _Child(self._settings, self._attention, self.threads)
        if not child.ready.wait(self.start_timeout_s):
            raise BackendError(f"model {self.name} is still loading after {self.start_timeout_s:.0f} s")
        if child.info is None:
            raise child.error  # the load failed (a missing model, bad weights): its own error
        return child

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            child = self._child
        child.close()

    # -- ChatBackend ----------------------------------------------------------------------

    @property
    def context_window(self) -> int:
        return self._running().info[1]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        from memstream.backends.local import count_tokens

        return count_tokens(self._running().info[2], text_or_messages)

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        check_messages(messages)
        options_from(opts)  # bad options fail here, before anything is sent
        child = self._running()
        rid = next(self._ids)
        waiting = child.open(rid)
        try:
            child.send(("stream", rid, [dict(m) for m in messages], opts))
            kind, *rest = waiting.get()
        except BaseException:
            child.done(rid)
            raise
        if kind != "started":
            child.done(rid)
            raise rest[0]
        return self._pieces(child, rid, waiting)

    def _pieces(self, child: _Child, rid: int, waiting: queue.SimpleQueue) -> Iterator[str]:
        finished = False
        try:
            while True:
                kind, *rest = waiting.get()
                if kind == "piece":
                    yield rest[0]
                elif kind == "end":
                    finished = True
                    return
                else:
                    finished = True
                    raise rest[0]
        finally:
            child.done(rid)
            if not finished and child.alive:
                try:
                    child.send(("cancel", rid))
                except BackendError:
                    pass  # the child died meanwhile: nothing left to cancel

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return "".join(self.stream(messages, **opts))


if __name__ == "__main__":
    channel = Connection(int(sys.argv[1]))
    serve_model(channel, *channel.recv())
