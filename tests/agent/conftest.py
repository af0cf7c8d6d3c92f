from __future__ import annotations

import pytest

from memstream.config import load_settings


@pytest.fixture(scope="session")
def shared_embedder():
    """MiniLM loads once for the whole session (the real model, from its PyPI package)."""
    from memstream.retrieval.embedder import EmbedderCache

    return EmbedderCache()


@pytest.fixture
def make_agent(tmp_path, shared_embedder):
    """Build a whole agent on a temp SQLite database with the real retriever and a scripted backend."""
    from memstream.agent.controller import MemoryAgent
    from memstream.memory.store import MemoryStore
    from memstream.retrieval.retriever import Retriever

    agents = []

    def build(backend, enrich: bool = False, enricher=None, **overrides):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / 'agent.db'}", home=str(tmp_path), **overrides)
        store = MemoryStore(settings.database_url)
        retriever = Retriever.from_settings(settings, store, embedders=shared_embedder)
        agent = MemoryAgent(store, retriever, backend, settings, enricher=enricher, enrich=enrich)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:
        agent.close()
