"""A deterministic backend for tests and benchmarks of control flow (never a default).

Replies come from a queue (`enqueue`) or a function of the messages; when both are
empty it echoes a short acknowledgement of the last user message.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Callable, Iterator, Sequence

from memstream.backends.base import BackendError, Message, check_messages, options_from

_TOKEN = re.compile(r"\S+|\s+")
KEEP_CALLS = 256


class ScriptedBackend:
    name = "scripted"
    concurrent = False
    """Like the local model, served one request at a time by default; set True to model a remote endpoint."""

    def __init__(
        self,
        replies: Sequence[str] = (),
        respond: Callable[[Sequence[Message]], str] | None = None,
        context_window: int = 8192,
        fail_after: int | None = None,
        keep_calls: int = KEEP_CALLS,
    ):
        self.context_window = context_window
        self.queue: deque[str] = deque(replies)
        self.respond = respond
        self.calls: list[list[Message]] = []
        """The prompts of the last `keep_calls` calls, oldest first (a soak of thousands of turns must not keep them all)."""
        self.keep_calls = keep_calls
        # Fail mid-stream after this many pieces (to test dropped connections).
        self.fail_after = fail_after

    def enqueue(self, *replies: str) -> None:
        self.queue.extend(replies)

    def _reply(self, messages: Sequence[Message]) -> str:
        if self.queue:
            return self.queue.popleft()
        if self.respond is not None:
            return self.respond(messages)
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return f"OK: {last_user[:80]}"

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        check_messages(messages)
        options = options_from(opts)
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]
        if len(self.calls) > self.keep_calls:
            del self.calls[: len(self.calls) - self.keep_calls]
        text = self._reply(messages)
        for stop in options.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        pieces = _TOKEN.findall(text)[: options.max_tokens * 2]
        for i, piece in enumerate(pieces):
            if self.fail_after is not None and i >= self.fail_after:
                raise BackendError("scripted backend dropped the connection mid-stream")
            yield piece

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return "".join(self.stream(messages, **opts))

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        if isinstance(text_or_messages, str):
            return len(text_or_messages.split())
        return sum(len(m["content"].split()) + 4 for m in text_or_messages)
