"""One worker thread runs every backend call, in arrival order.

The local model is not thread-safe and a CPU does one generation at a time well, so requests
queue here instead of racing. Streaming pieces travel from the worker to the request's event
loop through an asyncio.Queue; when a client goes away the worker stops at the next piece.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

from memstream.backends.base import ChatBackend, Message


class GenerationQueue:
    def __init__(self, backend: ChatBackend):
        self.backend = backend
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memstream-generate")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn on the worker thread after everything queued before it (for any backend-touching work)."""
        return await asyncio.wrap_future(self.executor.submit(fn, *args, **kwargs))

    async def complete(self, messages: Sequence[Message], **opts: Any) -> str:
        return await self.run(self.backend.complete, messages, **opts)

    def stream(self, messages: Sequence[Message], **opts: Any) -> AsyncIterator[str]:
        """Text pieces as the worker produces them; errors from the backend are raised here."""
        return self.iterate(lambda: self.backend.stream(messages, **opts))

    def iterate(self, produce: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """Run the iterator `produce()` returns on the worker; its items arrive here as it yields them.

        When the consumer stops early (client gone), the iterator is closed on the worker at its next
        item, so a generator's cleanup (the memory agent keeps what was said) runs there.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            try:
                items = produce()
                try:
                    for item in items:
                        loop.call_soon_threadsafe(pieces.put_nowait, ("piece", item))
                        if cancelled.is_set():
                            break
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
                loop.call_soon_threadsafe(pieces.put_nowait, ("end", None))
            except Exception as exc:  # not swallowed: re-raised in the request below
                loop.call_soon_threadsafe(pieces.put_nowait, ("error", exc))

        self.executor.submit(work)

        async def drain() -> AsyncIterator[Any]:
            try:
                while True:
                    kind, value = await pieces.get()
                    if kind == "end":
                        return
                    if kind == "error":
                        raise value
                    yield value
            finally:
                cancelled.set()

        return drain()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
