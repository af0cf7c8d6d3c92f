"""Fixtures for the reliability suite: agents over a Memory on temp SQLite files (the session's one
MiniLM and `make_memory` come from the root conftest)."""

from __future__ import annotations

import pytest

from memstream.config import load_settings


@pytest.fixture
def make_agent(tmp_path, make_memory):
    """A whole agent (a real Memory, scripted backend) on a temp SQLite file `<name>.db`."""
    from memstream.agent.controller import MemoryAgent

    agents = []

    def build(backend, enrich: bool = False, name: str = "agent", **overrides):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / (name + '.db')}", home=str(tmp_path), **overrides)
        agent = MemoryAgent(make_memory(settings), backend, settings, enrich=enrich)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:  # before make_memory closes the memories: enrichment drains into an open memory
        agent.close()


@pytest.fixture
def cli_shares_embedders(monkeypatch, embedders):
    """The CLI opens its memory with a fresh EmbedderCache per command: hand it the session's loaded model,
    so each CLI example costs a command, not a model load."""
    from memstream.memory import core

    monkeypatch.setattr(core, "EmbedderCache", lambda: embedders)
    return embedders
