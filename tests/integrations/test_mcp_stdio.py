"""The real stack end to end: `memstream mcp` started as a subprocess over stdio (real MiniLM embedder, SQLite),
driven by the official `mcp` SDK's client, the way Claude Desktop or Cursor start it."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402

from memstream.config import load_settings  # noqa: E402
from memstream.memory import open_memory  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402


def server_for(user: str, db_url: str, home) -> StdioServerParameters:
    env = {"MEMSTREAM_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return StdioServerParameters(command=sys.executable, args=["-m", "memstream.cli", "mcp", "--user", user, "--db", db_url],
                                 env=env, cwd=str(REPO_ROOT))


@pytest.mark.slow
async def test_stdio_server_remembers_searches_forgets_and_keeps_users_apart(tmp_path, isolated_home):
    db_url = f"sqlite:///{tmp_path / 'mcp.db'}"
    async with Client(server_for("alice", db_url, isolated_home), read_timeout_seconds=300) as alice:
        names = {t.name for t in (await alice.list_tools()).tools}
        assert names == {"remember", "search_memory", "list_memories", "forget_memory", "forget_user"}
        stored = await alice.call_tool("remember", {"text": "I adopted a grey cat called Miso last spring."})
        assert not stored.is_error, stored.content
        cat_id = stored.structured_content["stored"][0]["id"]
        await alice.call_tool("remember", {"text": "My favourite food is pad thai."})
        # Meaning, not words: the real embedder finds the cat for "pet".
        found = await alice.call_tool("search_memory", {"query": "what pet do I have?", "k": 2})
        hits = found.structured_content["hits"]
        assert hits[0]["id"] == cat_id and hits[0]["dense_score"] is not None
        bad = await alice.call_tool("search_memory", {"query": "pet", "k": "ten"})
        assert bad.is_error  # a malformed call is an MCP tool error; the server keeps serving
        assert not (await alice.call_tool("forget_memory", {"memory_id": cat_id})).is_error
        after = await alice.call_tool("search_memory", {"query": "what pet do I have?", "k": 2})
        assert cat_id not in [h["id"] for h in after.structured_content["hits"]]

    async with Client(server_for("bob", db_url, isolated_home), read_timeout_seconds=300) as bob:
        assert (await bob.call_tool("search_memory", {"query": "favourite food"})).structured_content["hits"] == []
        assert (await bob.call_tool("list_memories", {})).structured_content["memories"] == []
    with open_memory(load_settings(db_url=db_url), index=False) as memory:
        assert [t.text for t in memory.list_turns("alice")] == ["My favourite food is pad thai."]
        assert not memory.has_user("bob")
