"""`MemstreamChatModel`: any memstream `ChatBackend` as a LangChain chat model.

Pass a backend object (`backend=ScriptedBackend()`, a loaded local model, an OpenAI-compatible
client), or let the model build one from memstream's settings on first use: `model`, `kind`,
`base_url`, `api_key`, `timeout` and `max_retries` override the `backend` section. Nothing heavy
(torch, the model weights) loads until the first call.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Literal, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage, HumanMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from memstream.backends.base import ChatBackend, Message

PROVIDER = "memstream"
# Per-call keyword arguments forwarded to the backend; anything else is a caller mistake.
CALL_OPTIONS = ("max_tokens", "temperature", "top_p")


class UnsupportedMessageError(TypeError):
    """A LangChain message type that memstream backends cannot take (they speak system/user/assistant)."""


def to_backend_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages -> memstream messages. Multimodal content keeps only its text."""
    converted: list[Message] = []
    for index, message in enumerate(messages):
        if isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, ChatMessage) and message.role in ("user", "assistant", "system"):
            role = message.role
        else:
            raise UnsupportedMessageError(
                f"message {index} is a {type(message).__name__}; memstream backends take human, ai and system "
                "messages (tool calling is not supported)"
            )
        converted.append({"role": role, "content": message.text})
    return converted


class MemstreamChatModel(BaseChatModel):
    """A LangChain chat model over a memstream backend, with token streaming.

    Example:
        >>> from memstream.backends.scripted import ScriptedBackend
        >>> llm = MemstreamChatModel(backend=ScriptedBackend(["Hi there."]))
        >>> llm.invoke("Hello").content
        'Hi there.'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, protected_namespaces=())

    backend: Any = Field(default=None, exclude=True)
    """A memstream ChatBackend; None builds one from the settings on first use."""
    model_name: str | None = Field(default=None, alias="model")
    """Model to build when no backend is passed (backend.model setting); the backend's own name otherwise."""
    kind: Literal["local", "openai", "scripted"] | None = None
    """Backend kind to build when no backend is passed (backend.kind setting)."""
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: float | None = None
    max_retries: int | None = None
    temperature: float = 0.0
    max_tokens: int | None = None
    """Reply length limit; None keeps the backend's default."""
    top_p: float = 1.0
    stop: list[str] | None = None
    streaming: bool = False
    """Stream by default when invoked (LangChain's `streaming` flag)."""

    _built: ChatBackend | None = PrivateAttr(default=None)
    _build_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "memstream"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_label(), "temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p}

    def _model_label(self) -> str:
        if self.backend is not None:
            return str(getattr(self.backend, "name", type(self.backend).__name__))
        if self._built is not None:
            return self._built.name
        return self.model_name or "default"

    def get_backend(self) -> ChatBackend:
        """The backend: the one passed in, or the one built from settings (once)."""
        if self.backend is not None:
            return self.backend
        with self._build_lock:
            if self._built is None:
                self._built = self._build_backend()
            return self._built

    def _build_backend(self) -> ChatBackend:
        from memstream.backends.models import make_backend
        from memstream.config import load_settings

        settings = load_settings()
        overrides = {
            "model": self.model_name,
            "kind": self.kind,
            "base_url": self.base_url,
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "timeout_s": self.timeout,
            "max_retries": self.max_retries,
        }
        backend_settings = settings.backend.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        return make_backend(backend_settings, settings.attention)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_name=kwargs.get("model") or self._model_label(), ls_model_type="chat", ls_temperature=kwargs.get("temperature", self.temperature))
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(CALL_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) for MemstreamChatModel: {unknown}; accepted: {list(CALL_OPTIONS)} and stop")
        options: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        options.update(kwargs)
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            options["stop"] = tuple(stops)
        return options

    def _usage(self, backend: ChatBackend, prompt: list[Message], text: str) -> UsageMetadata:
        input_tokens = backend.count_tokens(prompt)
        output_tokens = backend.count_tokens(text) if text else 0
        return UsageMetadata(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        backend = self.get_backend()
        prompt = to_backend_messages(messages)
        text = backend.complete(prompt, **self._options(stop, kwargs))
        message = AIMessage(
            content=text,
            usage_metadata=self._usage(backend, prompt, text),
            response_metadata={"model_name": backend.name, "model_provider": PROVIDER},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        backend = self.get_backend()
        prompt = to_backend_messages(messages)
        pieces: list[str] = []
        for piece in backend.stream(prompt, **self._options(stop, kwargs)):
            if not piece:
                continue
            pieces.append(piece)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        # One closing chunk carries the usage and the model name, so they are counted once when chunks are summed.
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=self._usage(backend, prompt, "".join(pieces)),
                response_metadata={"model_name": backend.name, "model_provider": PROVIDER},
                chunk_position="last",
            )
        )
