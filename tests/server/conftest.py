"""Server fixtures: a real uvicorn server on 127.0.0.1 (free port, in a thread) over a temp SQLite
database, the real indexes (the session's one MiniLM, root conftest) and a scripted backend that answers
from the memory block of its prompt, so a test sees whether a fact reached the prompt."""

from __future__ import annotations

import time
from typing import Sequence

import httpx
import pytest

from memstream.agent import prompts
from memstream.backends.base import Message
from memstream.backends.scripted import ScriptedBackend
from memstream.config import Settings, load_settings

KEY_ACME = "acme-key-0123456789"
KEY_GLOBEX = "globex-key-9876543210"
BODY_LIMIT = 16_384


def answer_from_memory(messages: Sequence[Message]) -> str:
    """'From memory: <the oldest evidence lines>' when the prompt has memories, else a plain admission."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if prompts.MEMORY_OPEN in system:
        block = system.split(prompts.MEMORY_OPEN, 1)[1].split(prompts.MEMORY_CLOSE, 1)[0].strip()
        if block and prompts.NO_MEMORY not in block:
            # The two oldest lines, clipped: short enough that the reply is never cut at max_tokens.
            return "From memory: " + " | ".join(line[:120] for line in block.splitlines()[:2])
    return "I have nothing about that."


def rows_of(settings: Settings):
    """The server's database opened for its rows only (no model, no index): what a test checks was stored."""
    from memstream.memory import open_memory

    return open_memory(settings, index=False)


def wait_until_embedded(server, timeout_s: float = 60.0) -> None:
    """Poll /ready until the background indexer has embedded every queued key: from then on search finds the
    stored turns by meaning too (they are found by keyword at once)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{server.url}/ready", timeout=30).json()["index"]["pending_keys"] > 0:
        assert time.monotonic() < deadline, f"the server's indexer did not catch up within {timeout_s}s"
        time.sleep(0.05)


@pytest.fixture
def server_settings(tmp_path) -> Settings:
    return load_settings(
        db_url=f"sqlite:///{tmp_path / 'server.db'}",
        home=str(tmp_path / "home"),
        **{"server.api_keys": {KEY_ACME: "acme", KEY_GLOBEX: "globex"}, "server.max_body_bytes": BODY_LIMIT,
           "server.max_tokens_limit": 64, "server.index_refresh_s": 0.5, "agent.enrich": False},
    )


@pytest.fixture
def start_server(embedders):
    """start_server(settings, backend) -> a running ServerThread; stopped after the test."""
    from memstream.server.app import ServerThread, create_app

    servers = []

    def start(settings: Settings, backend=None):
        backend = backend or ScriptedBackend(respond=answer_from_memory)
        server = ServerThread(create_app(settings, backend, embedders=embedders)).start(timeout_s=120)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def memory_server(start_server, server_settings):
    return start_server(server_settings)
