"""OpenAIBackend against memstream's own server on 127.0.0.1 (no network), plus failure modes."""

from __future__ import annotations

import socket

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from memstream.backends.base import BackendError, ModelNotFoundError
from memstream.backends.models import DEFAULT_MODEL, make_backend
from memstream.backends.openai_backend import OpenAIBackend
from memstream.config import BackendSettings
from memstream.server.app import ServerThread
from tests.backends.live_server import API_KEY

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def remote(url: str, key: str | None = API_KEY, model: str = DEFAULT_MODEL, retries: int = 0) -> OpenAIBackend:
    return OpenAIBackend(BackendSettings(kind="openai", base_url=f"{url}/v1", api_key=key, model=model,
                                         max_retries=retries, timeout_s=120))


@pytest.mark.slow
def test_complete_and_stream_match_the_local_model(live_server, local_backend):
    backend = remote(live_server.url)
    expected = local_backend.complete(ASK, max_tokens=12)
    assert backend.complete(ASK, max_tokens=12) == expected
    pieces = list(backend.stream(ASK, max_tokens=12, stop=["."]))
    assert len(pieces) > 1 and "".join(pieces) == expected.split(".")[0]


@pytest.mark.slow
def test_wrong_key_and_unknown_model_are_named(live_server):
    with pytest.raises(BackendError, match="rejected the API key"):
        remote(live_server.url, key="nope").complete(ASK, max_tokens=4)
    with pytest.raises(ModelNotFoundError, match="gpt-nothing"):
        list(remote(live_server.url, model="gpt-nothing").stream(ASK, max_tokens=4))


def test_endpoint_down_is_a_clear_error():
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach"):
        remote(f"http://127.0.0.1:{port}").complete(ASK)


def flaky_app(failures: int, status: int) -> tuple[FastAPI, list[int]]:
    """Answers `status` for the first `failures` calls, then a one-word completion."""
    app, calls = FastAPI(), []

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        calls.append(1)
        if len(calls) <= failures:
            return JSONResponse({"error": {"message": "busy", "type": "server_error", "param": None, "code": None}},
                                status_code=status, headers={"retry-after-ms": "10"})
        return JSONResponse({"error": {"message": "streaming only here", "type": "x", "param": None, "code": None}}, status_code=400)

    return app, calls


def test_retries_on_5xx_then_reports_the_failure():
    app, calls = flaky_app(failures=100, status=503)
    with ServerThread(app) as server:
        with pytest.raises(BackendError, match="HTTP 503"):
            remote(server.url, retries=2).complete(ASK)
    assert len(calls) == 3  # the first try and two retries


def test_rate_limit_is_retried_and_named():
    app, calls = flaky_app(failures=100, status=429)
    with ServerThread(app) as server:
        with pytest.raises(BackendError, match="rate limiting"):
            remote(server.url, retries=1).complete(ASK)
    assert len(calls) == 2


def test_make_backend_builds_the_openai_backend():
    backend = make_backend(BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1", model="m", context_window=4096))
    assert isinstance(backend, OpenAIBackend) and backend.name == "m" and backend.context_window == 4096
    assert backend.count_tokens("a" * 40) == 10
    with pytest.raises(ValueError, match="empty"):
        backend.complete([])


def sse_app(chunks: list[object]) -> FastAPI:
    """Streams these chunks as server-sent events, then [DONE]."""
    import json

    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return StreamingResponse(iter([body]), media_type="text/event-stream")

    return app


def test_stream_keeps_only_text_deltas():
    """Role-only, usage-only (no choices), null-content and malformed chunks carry no text and are skipped."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Par"}}]},
        {"choices": [{"index": 0, "delta": {"content": None}}]},
        {"choices": [{"index": 0, "delta": {"content": "is"}, "finish_reason": None}]},
        {"choices": "not a list"},
        [1, 2, 3],
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        {"choices": [{"index": 0, "delta": {"content": 7}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    with ServerThread(sse_app(chunks)) as server:
        assert list(remote(server.url).stream(ASK)) == ["Par", "is"]


def test_stream_error_event_is_a_backend_error():
    with ServerThread(sse_app([{"error": {"message": "upstream exploded", "type": "server_error"}}])) as server:
        with pytest.raises(BackendError, match="upstream exploded"):
            list(remote(server.url).stream(ASK))


def test_streams_reuse_one_upstream_connection():
    """The SDK's stream closed each response with the bytes after [DONE] unread, so every chat opened a new
    connection (a TLS handshake per chat to a remote API); reading the body to its end keeps one."""
    import json

    from fastapi.responses import StreamingResponse

    app, peers = FastAPI(), []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        peers.append(request.client.port)
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
        return StreamingResponse(iter([f"data: {json.dumps(chunk)}\n\n", "data: [DONE]\n\n"]), media_type="text/event-stream")

    with ServerThread(app) as server:
        backend = remote(server.url)
        assert [backend.complete(ASK) for _ in range(5)] == ["hi"] * 5
    assert len(peers) == 5 and len(set(peers)) == 1


def test_sse_data_joins_lines_and_skips_other_fields():
    from memstream.backends.openai_backend import sse_data

    lines = [": keep-alive", "", "event: message", "data: {\"a\":", "data:  1}", "id: 7", "", "", "data: [DONE]"]
    assert list(sse_data(lines)) == ['{"a":\n 1}', "[DONE]"]  # the last event needs no closing blank line


def test_stream_event_that_is_not_json_is_a_backend_error():
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        return StreamingResponse(iter(["data: {not json\n\n"]), media_type="text/event-stream")

    with ServerThread(app) as server:
        with pytest.raises(BackendError, match="not JSON"):
            list(remote(server.url).stream(ASK))


def test_a_stream_that_breaks_off_is_a_backend_error():
    """An upstream whose connection drops mid-reply: the HTTP library's error left the SDK's stream raw (a 500 in the
    server); it is a BackendError naming the endpoint."""
    import json

    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def body():
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'Par'}}]})}\n\n"
            raise RuntimeError("the upstream died mid-reply")

        return StreamingResponse(body(), media_type="text/event-stream")

    with ServerThread(app) as server:
        with pytest.raises(BackendError, match="stream broke off"):
            list(remote(server.url).stream(ASK))
