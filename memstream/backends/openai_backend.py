"""One backend for any OpenAI-compatible endpoint: OpenAI, vLLM, SGLang, llama.cpp, Ollama, memstream serve.

Retries with exponential backoff on 429, 5xx and dropped connections are the openai SDK's
own (`max_retries`); every failure that is left surfaces as BackendError (or a subclass)
whose message names the endpoint and the fix.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Iterable, Iterator, Sequence

import openai

from memstream.backends.base import (
    BackendError,
    ContextOverflowError,
    Message,
    ModelNotFoundError,
    check_messages,
    options_from,
)
from memstream.config import BackendSettings

DEFAULT_CONTEXT_WINDOW = 8192
"""Assumed when backend.context_window is not set: the API does not report it."""


class OpenAIBackend:
    concurrent = True
    """Many requests may be in flight at once (the SDK's client is thread-safe): the server does not serialise them."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.name = settings.model
        self.context_window = settings.context_window or DEFAULT_CONTEXT_WINDOW
        self.base_url = settings.base_url or "https://api.openai.com/v1"
        # Self-hosted servers often need no key; the SDK still insists on a non-empty one.
        key = settings.api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=settings.timeout_s, max_retries=settings.max_retries
        )

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        check_messages(messages)
        options = options_from(opts)
        request = dict(
            model=self.settings.model,
            messages=[{"role": m["role"], "content": m["content"]} for m in messages],
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            stream=True,
        )
        if options.stop:
            request["stop"] = list(options.stop)
        with self._errors():
            # The SDK's low-level post: `chat.completions.create` re-validates the request body we just built and
            # parses every chunk into a model, which doubled the client's CPU per memory chat; chunks stay plain dicts.
            chunks = self.client.post("/chat/completions", body=request, cast_to=object, stream=True,
                                      stream_cls=EventChunks)
        return self._pieces(chunks)

    def _pieces(self, chunks) -> Iterator[str]:
        with self._errors():
            for chunk in chunks:
                content = _delta_content(chunk)
                if content:
                    yield content

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return "".join(self.stream(messages, **opts))

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        """An estimate (about 4 characters per token, 4 tokens of framing per message): the API has no tokenizer."""
        if isinstance(text_or_messages, str):
            return math.ceil(len(text_or_messages) / 4)
        return sum(math.ceil(len(m["content"]) / 4) + 4 for m in text_or_messages) + 2

    def _errors(self):
        return _translate_errors(self.base_url, self.settings.model)


class EventChunks(openai.Stream[object]):
    """The SDK's stream of server-sent events, each a decoded JSON value, read to the end of the body.

    The SDK's own stream stops reading at `data: [DONE]` and closes the response with its last bytes unread, and
    an HTTP client cannot put such a connection back in its pool: every chat opened a new connection to the
    upstream (a TLS handshake per request to a remote API). Here the bytes after [DONE] are read (a few, a bounded
    number of lines), so the connection is reused. An `error` event raises the SDK's APIError, as its stream does."""

    def __stream__(self) -> Iterator[object]:
        response = self.response
        # The SDK's HTTP library (httpx, or its fork in newer SDKs): a connection that breaks mid-stream raises its
        # TransportError, which the SDK's own stream let out raw (a 500 in the server instead of a backend error).
        transport_error = getattr(sys.modules.get(type(response).__module__.partition(".")[0]), "TransportError", ())
        try:
            yield from _events(response)
        except transport_error as exc:
            raise openai.APIError(f"the stream broke off: {exc or type(exc).__name__}", request=response.request, body=None) from exc
        finally:
            response.close()


def _events(response) -> Iterator[object]:
    lines = response.iter_lines()
    for payload in sse_data(lines):
        if payload.startswith("[DONE]"):
            for _ in zip(range(MAX_LINES_AFTER_DONE), lines):
                pass
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise openai.APIError(f"the stream sent an event that is not JSON: {payload[:80]!r}",
                                  request=response.request, body=None) from None
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(message if isinstance(message, str) and message else "an error occurred during streaming",
                                  request=response.request, body=error)
        yield chunk


MAX_LINES_AFTER_DONE = 64
"""Read past [DONE] to the end of the body for connection reuse, but no further than this (then the connection goes)."""


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event (its `data:` lines joined); other fields and comments are skipped, and an
    event cut off by the end of the body still counts (some servers omit the last blank line)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


def _delta_content(chunk: object) -> str | None:
    """The text of one streamed chunk (a decoded JSON object); None for role-only, usage-only or odd chunks."""
    if not isinstance(chunk, dict):
        return None
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else None


class _translate_errors:
    """Turn openai SDK exceptions into BackendError with a message a user can act on."""

    def __init__(self, base_url: str, model: str):
        self.base_url, self.model = base_url, model

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, openai.OpenAIError):
            return False
        where = self.base_url
        if isinstance(exc, openai.APITimeoutError):
            raise BackendError(f"{where} did not answer in time (raise backend.timeout_s, or check the server)") from exc
        if isinstance(exc, openai.APIConnectionError):
            raise BackendError(f"cannot reach {where}: is the server running and backend.base_url right? ({exc})") from exc
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            raise BackendError(f"{where} rejected the API key: set backend.api_key (MEMSTREAM_BACKEND__API_KEY)") from exc
        if isinstance(exc, openai.NotFoundError):
            raise ModelNotFoundError(f"{where} does not serve model {self.model!r} (check backend.model)") from exc
        if isinstance(exc, openai.RateLimitError):
            raise BackendError(f"{where} is rate limiting (429) and retries ran out; wait or raise backend.max_retries") from exc
        if isinstance(exc, openai.BadRequestError):
            message = _error_message(exc)
            if "context" in message.lower() and ("length" in message.lower() or "window" in message.lower()):
                raise ContextOverflowError(f"{where}: {message}") from exc
            raise BackendError(f"{where} refused the request: {message}") from exc
        if isinstance(exc, openai.APIStatusError):
            raise BackendError(f"{where} failed with HTTP {exc.status_code}: {_error_message(exc)}") from exc
        raise BackendError(f"{where}: {exc}") from exc


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(exc)
