"""The OpenAI-compatible routes, through the real openai client and raw HTTP, on the default local model."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memstream.backends.local import LocalBackend
from memstream.backends.models import DEFAULT_MODEL
from memstream.backends.scripted import ScriptedBackend
from memstream.cli import app as cli_app
from memstream.config import ConfigError, ServerSettings, Settings
from memstream.server.app import check_bind, create_app
from tests.backends.live_server import API_KEY, live_server, local_backend  # noqa: F401  (session fixtures)

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def client_for(server, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def post(server, body: bytes | str, key: str = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers, timeout=120)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.slow
def test_openai_client_completion_and_stream(live_server):
    client = client_for(live_server)
    reply = client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=16, temperature=0)
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens >= 1
    assert reply.choices[0].finish_reason in ("stop", "length")

    chunks = list(client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=16, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same answer either way
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_sse_wire_format_ends_with_done(live_server):
    body = {"messages": ASK, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{live_server.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2][6:])["usage"]
    assert usage["completion_tokens"] >= 1


@pytest.mark.slow
def test_eight_concurrent_requests_all_answered(live_server):
    client = client_for(live_server)

    def ask(i: int) -> str:
        question = [{"role": "user", "content": f"Say the number {i}."}]
        if i % 2:  # half of them stream
            stream = client.chat.completions.create(model=DEFAULT_MODEL, messages=question, max_tokens=12, temperature=0, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return client.chat.completions.create(model=DEFAULT_MODEL, messages=question, max_tokens=12, temperature=0).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert all(answers)
    # Requests are serialised, so interleaving cannot corrupt a generation: each equals its lone rerun.
    assert ask(3) == answers[3] and ask(4) == answers[4]


@pytest.mark.slow
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(live_server):
    with pytest.raises(openai.AuthenticationError):
        client_for(live_server, key="wrong-key").chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=4)
    assert_openai_error(httpx.post(f"{live_server.url}/v1/chat/completions", json={"messages": ASK}), 401)
    assert assert_openai_error(post(live_server, b'{"messages": [ {"role": "user",'), 400)["code"] == "invalid_json"
    assert assert_openai_error(post(live_server, json.dumps({"messages": ASK, "pad": "x" * 10_000})), 413)["code"] == "request_too_large"
    assert assert_openai_error(post(live_server, json.dumps({"messages": ASK, "max_tokens": 65})), 400)["param"] == "max_tokens"
    assert assert_openai_error(post(live_server, json.dumps({"messages": []})), 400)["param"] == "messages"
    assert assert_openai_error(post(live_server, json.dumps({"messages": [{"role": "robot", "content": "x"}]})), 400)["param"].startswith("messages")
    assert assert_openai_error(post(live_server, json.dumps({"model": "gpt-9", "messages": ASK})), 404)["code"] == "model_not_found"
    assert_openai_error(httpx.get(f"{live_server.url}/v1/nothing-here"), 404)

    reply = client_for(live_server).chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content


@pytest.mark.slow
def test_models_and_health(live_server):
    ids = [m.id for m in client_for(live_server).models.list()]
    assert ids[0] == DEFAULT_MODEL  # the served model first (memory variants may follow)
    assert httpx.get(f"{live_server.url}/health").json() == {"status": "ok", "model": DEFAULT_MODEL}
    assert httpx.get(f"{live_server.url}/v1/models").status_code == 401


@pytest.mark.slow
def test_prompt_longer_than_the_window_is_a_400(local_backend):
    app = create_app(Settings(), LocalBackend(local_backend.local, context_limit=128))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        long_ask = [{"role": "user", "content": "memory " * 300}]
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json={"messages": long_ask, "stream": stream})
            assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
        assert client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 4}).status_code == 200


def test_without_keys_no_auth_is_needed_and_a_stream_failure_is_reported_in_band():
    backend = ScriptedBackend(["first reply here", "one two three four five"])
    with TestClient(create_app(Settings(), backend), base_url="http://127.0.0.1") as client:
        reply = client.post("/v1/chat/completions", json={"messages": ASK}).json()
        assert reply["choices"][0]["message"]["content"] == "first reply here"
        backend.fail_after = 2
        response = client.post("/v1/chat/completions", json={"messages": ASK, "stream": True})
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "dropped the connection" in json.loads(events[-2])["error"]["message"]


def test_refuses_public_bind_without_a_key():
    with pytest.raises(ConfigError, match="API key"):
        check_bind(Settings(), "0.0.0.0")
    check_bind(Settings(), "127.0.0.1")
    check_bind(Settings(), "::1")
    check_bind(Settings(server=ServerSettings(api_keys={"k": "t"})), "0.0.0.0")
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--backend", "scripted"])
    assert result.exit_code == 2 and "API key" in result.output
