"""MemstreamChatModel: the langchain-tests standard suites, plus what they do not check
(options reach the backend, stop strings, usage, unsupported messages, backend errors)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from memstream.backends.base import BackendError
from memstream.backends.scripted import ScriptedBackend
from memstream.langchain import MemstreamChatModel, UnsupportedMessageError


class TestMemstreamChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[MemstreamChatModel]:
        return MemstreamChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"backend": ScriptedBackend()}

    @property
    def supports_model_override(self) -> bool:
        return False  # a backend object serves one model


class TestMemstreamChatModelScripted(ChatModelIntegrationTests):
    """The integration suite over the scripted backend: the adapter's plumbing (invoke, stream,
    async, batch, usage, stop), fast and deterministic."""

    @property
    def chat_model_class(self) -> type[MemstreamChatModel]:
        return MemstreamChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"backend": ScriptedBackend()}

    @property
    def supports_model_override(self) -> bool:
        return False


@pytest.fixture(scope="module")
def local_backend():
    from memstream.backends.models import make_backend
    from memstream.config import BackendSettings

    return make_backend(BackendSettings(kind="local"))


@pytest.mark.slow
class TestMemstreamChatModelLocal(ChatModelIntegrationTests):
    """The integration suite over the default local model (SmolLM2-135M, CPU). It has no tool
    calling, structured output or multimodal input; the suite's feature properties say so."""

    @pytest.fixture(autouse=True)
    def _backend(self, local_backend):
        self._local = local_backend

    @property
    def chat_model_class(self) -> type[MemstreamChatModel]:
        return MemstreamChatModel

    @property
    def chat_model_params(self) -> dict:
        # Short replies keep the suite quick on a CPU; every test only needs some text back.
        return {"backend": self._local, "max_tokens": 3}

    @property
    def supports_model_override(self) -> bool:
        return False


def test_options_and_stop_reach_the_backend():
    backend = ScriptedBackend(["alpha beta STOP gamma"])
    model = MemstreamChatModel(backend=backend, stop=["STOP"], temperature=0.0)
    result = model.invoke([SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello"), HumanMessage("again")])
    assert result.content == "alpha beta "
    assert [m["role"] for m in backend.calls[0]] == ["system", "user", "assistant", "user"]
    assert result.usage_metadata["input_tokens"] == backend.count_tokens(backend.calls[0])
    assert result.usage_metadata["output_tokens"] == 2
    assert result.response_metadata["model_name"] == "scripted"


def test_stream_yields_backend_pieces_then_one_usage_chunk():
    model = MemstreamChatModel(backend=ScriptedBackend(["one two three"]))
    chunks = list(model.stream("count"))
    assert [c.content for c in chunks[:-1]] == ["one", " ", "two", " ", "three"]
    assert chunks[-1].chunk_position == "last"
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    assert chunks[-1].usage_metadata["output_tokens"] == 3


def test_max_tokens_limits_the_reply():
    model = MemstreamChatModel(backend=ScriptedBackend(["a b c d e f g h"]), max_tokens=2)
    # The scripted backend yields two pieces (word + space) per token of budget.
    assert model.invoke("x").content == "a b "


def test_unknown_call_option_is_a_clear_error():
    model = MemstreamChatModel(backend=ScriptedBackend())
    with pytest.raises(ValueError, match="unknown option.*frequency_penalty"):
        model.invoke("x", frequency_penalty=1.0)


def test_tool_messages_are_rejected_with_the_reason():
    model = MemstreamChatModel(backend=ScriptedBackend())
    with pytest.raises(UnsupportedMessageError, match="ToolMessage"):
        model.invoke([HumanMessage("x"), ToolMessage("42", tool_call_id="call-1")])


def test_backend_failure_mid_stream_reaches_the_caller():
    model = MemstreamChatModel(backend=ScriptedBackend(["one two three"], fail_after=2))
    received = []
    with pytest.raises(BackendError, match="mid-stream"):
        for chunk in model.stream("x"):
            received.append(chunk.content)
    assert received == ["one", " "]


def test_backend_is_built_from_settings_lazily(monkeypatch):
    monkeypatch.setenv("MEMSTREAM_BACKEND__KIND", "scripted")
    model = MemstreamChatModel()
    assert model._built is None  # nothing is loaded at construction
    assert model.invoke("hello there").content == "OK: hello there"
    assert model.get_backend() is model.get_backend()
