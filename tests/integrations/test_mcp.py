"""`memstream mcp`, driven by the official `mcp` SDK's Client: in-process (fast, hashing embedder) and over HTTP
with API keys (a real uvicorn server on 127.0.0.1). The stdio subprocess runs in test_mcp_stdio.py."""

from __future__ import annotations

import json

import httpx
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from memstream.mcp import MemoryOpener, build_server, stdio_server  # noqa: E402
from memstream.mcp.http import http_app, http_user_for  # noqa: E402
from memstream.mcp.server import FORGET_CONFIRMATION  # noqa: E402

TOOLS = {"remember", "search_memory", "list_memories", "forget_memory", "forget_user"}


class Shared(MemoryOpener):
    """One already-open Memory behind several servers (two users of one database); the test closes it."""

    def __init__(self, memory):
        self._memory, self._error = memory, None

    def get(self, timeout_s: float = 0):
        return self._memory

    def close(self) -> None:
        pass


async def call(client, tool: str, **arguments):
    result = await client.call_tool(tool, arguments)
    return result


def texts(result) -> list[str]:
    return [hit["text"] for hit in result.structured_content["hits"]]


async def test_tools_remember_search_list_and_forget(settings, memory):
    async with Client(stdio_server(settings, "alice", Shared(memory))) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        stored = await call(client, "remember", text="My sister Ana lives in Lisbon and studies octopuses.")
        assert not stored.is_error
        note_id = stored.structured_content["stored"][0]["id"]
        turns = await call(client, "remember", turns=[
            {"role": "user", "text": "I started running on Tuesdays.", "event_time": "2024-03-05T07:00:00"},
            {"role": "assistant", "text": "Tuesday runs sound great."},
        ], conversation="fitness")
        assert [t["conversation"] for t in turns.structured_content["stored"]] == ["fitness", "fitness"]

        found = await call(client, "search_memory", query="where does Ana live", k=3)
        assert not found.is_error
        best = found.structured_content["hits"][0]
        assert best["id"] == note_id and "Lisbon" in best["text"]
        assert {"time", "source_id", "score", "dense_score", "lexical_score"} <= set(best)

        windowed = await call(client, "search_memory", query="running Tuesdays", since="2024-03-01T00:00:00", until="2024-04-01T00:00:00")
        assert texts(windowed) == ["I started running on Tuesdays."]

        listed = await call(client, "list_memories", conversation="fitness", newest_first=False)
        assert [m["text"] for m in listed.structured_content["memories"]] == ["I started running on Tuesdays.", "Tuesday runs sound great."]

        assert not (await call(client, "forget_memory", memory_id=note_id)).is_error
        assert "Lisbon" not in " ".join(texts(await call(client, "search_memory", query="where does Ana live")))
        again = await call(client, "forget_memory", memory_id=note_id)
        assert again.is_error and f"no memory #{note_id}" in again.content[0].text


async def test_forget_user_needs_the_confirmation_phrase(settings, memory):
    async with Client(stdio_server(settings, "alice", Shared(memory))) as client:
        await call(client, "remember", text="I keep bees on the roof.")
        refused = await call(client, "forget_user", confirm="yes")
        assert refused.is_error and "nothing deleted" in refused.content[0].text
        assert memory.count_turns("alice") == 1
        missing = await call(client, "forget_user")
        assert missing.is_error and memory.count_turns("alice") == 1
        done = await call(client, "forget_user", confirm=FORGET_CONFIRMATION)
        assert not done.is_error and done.structured_content["forgotten"]["turns"] == 1
        assert memory.count_turns("alice") == 0
        assert texts(await call(client, "search_memory", query="bees")) == []


async def test_a_second_user_never_sees_the_first_users_memories(settings, memory):
    shared = Shared(memory)
    async with Client(stdio_server(settings, "alice", shared)) as alice:
        secret = (await call(alice, "remember", text="My locker code is 4412.")).structured_content["stored"][0]["id"]
    async with Client(stdio_server(settings, "bob", shared)) as bob:
        assert texts(await call(bob, "search_memory", query="locker code")) == []
        # A user named in the arguments is not a parameter: it cannot redirect the call.
        sneaky = await call(bob, "search_memory", query="locker code", user="alice")
        assert sneaky.is_error or texts(sneaky) == []
        assert (await call(bob, "list_memories")).structured_content["memories"] == []
        assert (await call(bob, "forget_memory", memory_id=secret)).is_error
        recent = await bob.read_resource("memstream://recent")
        assert json.loads(recent.contents[0].text) == []
    assert memory.get_turn("alice", secret) is not None


@pytest.mark.parametrize(
    "tool, arguments, says",
    [
        ("search_memory", {"query": "x", "k": 0}, "greater than or equal to 1"),
        ("search_memory", {"query": "x", "k": "many"}, "valid integer"),
        ("search_memory", {}, "query"),
        ("search_memory", {"query": "x", "since": "not a date"}, "since"),
        ("search_memory", {"query": "x", "since": "2024-05-01T00:00:00", "until": "2024-01-01T00:00:00"}, "must be before"),
        ("remember", {}, "either text"),
        ("remember", {"text": "a", "turns": [{"role": "user", "text": "b"}]}, "either text"),
        ("remember", {"turns": [{"role": "robot", "text": "b"}]}, "role"),
        ("remember", {"text": "x" * 2_000_000}, "text"),
        ("forget_memory", {"memory_id": -3}, "greater than or equal to 1"),
        ("list_memories", {"limit": 100000}, "less than or equal to 500"),
    ],
)
async def test_malformed_arguments_are_tool_errors_and_the_server_keeps_serving(settings, memory, tool, arguments, says):
    async with Client(stdio_server(settings, "alice", Shared(memory))) as client:
        result = await call(client, tool, **arguments)
        assert result.is_error
        assert says in result.content[0].text
        assert memory.count_turns("alice") == 0 if memory.has_user("alice") else True  # nothing stored
        ok = await call(client, "remember", text="still alive")
        assert not ok.is_error


async def test_recent_memories_resources(settings, memory):
    async with Client(stdio_server(settings, "alice", Shared(memory))) as client:
        await call(client, "remember", text="first note")
        await call(client, "remember", text="second note", conversation="work")
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"memstream://recent{?limit}", "memstream://conversations/{conversation}/recent{?limit}"}
        recent = json.loads((await client.read_resource("memstream://recent")).contents[0].text)
        assert [m["text"] for m in recent] == ["second note", "first note"]
        one = json.loads((await client.read_resource("memstream://recent?limit=1")).contents[0].text)
        assert [m["text"] for m in one] == ["second note"]
        work = json.loads((await client.read_resource("memstream://conversations/work/recent")).contents[0].text)
        assert [m["text"] for m in work] == ["second note"]


# -- streamable HTTP with API keys ----------------------------------------------------------------


@pytest.fixture
def http_server(settings, memory):
    """The ASGI app `memstream mcp --transport http` runs, served by uvicorn on a free loopback port."""
    import threading
    import time

    import uvicorn

    keyed = settings.model_copy(update={"server": settings.server.model_copy(update={"api_keys": {"key-acme": "acme", "key-globex": "globex"}})})
    app = http_app(build_server(Shared(memory), http_user_for("me")), keyed, "127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the MCP HTTP server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}{settings.mcp.path}"
    server.should_exit = True
    thread.join(10)


def keyed_client(url: str, key: str) -> Client:
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})))


async def test_http_needs_an_api_key(http_server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as raw:
        missing = await raw.post(http_server, json=body, headers=headers)
        wrong = await raw.post(http_server, json=body, headers={**headers, "Authorization": "Bearer nope"})
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"


async def test_http_tools_serve_the_keys_tenant_only(http_server, memory):
    async with keyed_client(http_server, "key-acme") as acme:
        assert {t.name for t in (await acme.list_tools()).tools} == TOOLS
        stored = await call(acme, "remember", text="The acme launch is on 3 June.")
        assert not stored.is_error
        assert "launch" in texts(await call(acme, "search_memory", query="when is the launch"))[0]
    # Stored under the tenant's namespace, exactly where the REST API puts user "me" of tenant acme.
    assert memory.count_turns("acme/me") == 1 and not memory.has_user("me")
    async with keyed_client(http_server, "key-globex") as globex:
        assert texts(await call(globex, "search_memory", query="when is the launch")) == []
        assert (await call(globex, "list_memories")).structured_content["memories"] == []
        bad = await call(globex, "search_memory", query="x", k=0)
        assert bad.is_error


def test_http_without_keys_binds_only_to_loopback(settings, memory):
    from memstream.config import ConfigError

    with pytest.raises(ConfigError, match="without an API key"):
        http_app(build_server(Shared(memory), http_user_for("me")), settings, "0.0.0.0")


def test_the_command_rejects_bad_transports_and_public_binds_before_opening_memory(tmp_path):
    from typer.testing import CliRunner

    from memstream.cli import app

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    bogus = CliRunner().invoke(app, ["mcp", "--transport", "carrier-pigeon", "--db", db])
    assert bogus.exit_code == 2 and "--transport must be stdio or http" in bogus.output
    public = CliRunner().invoke(app, ["mcp", "--transport", "http", "--host", "0.0.0.0", "--db", db])
    assert public.exit_code == 2 and "without an API key" in public.output
    empty_user = CliRunner().invoke(app, ["mcp", "--user", "", "--db", db])
    assert empty_user.exit_code == 2 and "user id" in empty_user.output
    assert not (tmp_path / "cli.db").exists()  # nothing was opened
