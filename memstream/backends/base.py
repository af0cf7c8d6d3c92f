"""The one interface every chat model sits behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, TypedDict, runtime_checkable


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class BackendError(RuntimeError):
    """A model backend failed (endpoint down, bad key, model missing...). The message says what to fix."""


class ModelNotFoundError(BackendError):
    """The named model or model file cannot be found or loaded."""


def load_failure(name: str, exc: BaseException) -> BaseException:
    """What a failed model load raises from every later call: a BackendError as it is; anything else (a bad device,
    broken weights: RuntimeError, ValueError, OSError) as ModelNotFoundError naming it, so a server answers 502
    "model failed to load" rather than 400 or 500 for its own configuration. KeyboardInterrupt and friends pass."""
    if isinstance(exc, BackendError) or not isinstance(exc, Exception):
        return exc
    failure = ModelNotFoundError(f"model {name} failed to load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    failure.__cause__ = exc
    return failure


class ContextOverflowError(BackendError):
    """The prompt does not fit the model's context window."""


@dataclass
class GenerationOptions:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model. `name` is shown in the UI and reports; `context_window` is in tokens."""

    name: str
    context_window: int

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        """Yield text pieces as they are generated. opts: max_tokens, temperature, top_p, stop."""
        ...

    def complete(self, messages: Sequence[Message], **opts) -> str:
        ...

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        ...


def options_from(opts: dict) -> GenerationOptions:
    """Validate generation options shared by every backend."""
    unknown = set(opts) - {"max_tokens", "temperature", "top_p", "stop"}
    if unknown:
        raise ValueError(f"unknown generation option(s): {sorted(unknown)}")
    result = GenerationOptions(**opts)
    if result.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {result.max_tokens}")
    if result.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {result.temperature}")
    if not 0 < result.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {result.top_p}")
    if isinstance(result.stop, str):
        result.stop = (result.stop,)
    return result


def check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("messages is empty: send at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must have 'role' and 'content'")
        if message["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"message {i} has unknown role {message['role']!r}")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i} content must be a string")
