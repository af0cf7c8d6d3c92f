"""Fixtures for the reliability suite: one embedder per session, agents on temp SQLite files."""

from __future__ import annotations

import pytest

from memstream.config import load_settings


@pytest.fixture(scope="session")
def embedders():
    """MiniLM loads once for the whole session (the real model, from its PyPI package)."""
    from memstream.retrieval.embedder import EmbedderCache

    return EmbedderCache()


@pytest.fixture
def make_agent(tmp_path, embedders):
    """A whole agent (real store, real retriever, scripted backend) on a temp SQLite file."""
    from memstream.agent.controller import MemoryAgent
    from memstream.memory.store import MemoryStore
    from memstream.retrieval.retriever import Retriever

    agents = []

    def build(backend, enrich: bool = False, name: str = "agent", **overrides):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / (name + '.db')}", home=str(tmp_path), **overrides)
        store = MemoryStore(settings.database_url)
        retriever = Retriever.from_settings(settings, store, embedders=embedders)
        agent = MemoryAgent(store, retriever, backend, settings, enrich=enrich)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:
        agent.close()
