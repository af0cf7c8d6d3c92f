"""A chat backend that loads in a background thread, so a front end is usable before the model is.

`memstream chat`, `serve` and `ask` open the store and the embedder while the model's weights
are read: `BackgroundBackend` starts the load at construction and answers `name` at once; the
first call that needs the model (`stream`, `complete`, `count_tokens`, `context_window`) waits
for it. A load that fails raises its own error (e.g. ModelNotFoundError) from that call, and
from every later one, so a missing model still gets its clear message.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Sequence

from memstream.backends.base import BackendError, ChatBackend, Message, load_failure


class BackgroundBackend:
    """Proxy for the backend `load()` builds in a daemon thread (the process may exit while it loads)."""

    def __init__(self, name: str, load: Callable[[], ChatBackend]):
        self.name = name
        self._load = load
        self._backend: ChatBackend | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._backend = self._load()
            self.name = self._backend.name
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = load_failure(self.name, exc)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """True once the load finished (successfully or not): calls no longer wait."""
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> ChatBackend:
        """The loaded backend; raises the load's error, or BackendError past `timeout_s`."""
        if not self._done.wait(timeout_s):
            raise BackendError(f"model {self.name} is still loading after {timeout_s:.0f} s")
        if self._error is not None:
            raise self._error
        assert self._backend is not None
        return self._backend

    @property
    def context_window(self) -> int:
        return self.wait().context_window

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        return self.wait().stream(messages, **opts)

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return self.wait().complete(messages, **opts)

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return self.wait().count_tokens(text_or_messages)
