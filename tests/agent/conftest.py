from __future__ import annotations

import pytest

from memstream.config import load_settings


@pytest.fixture
def make_agent(tmp_path, make_memory):
    """A whole agent on a temp SQLite database: a Memory with the real MiniLM (the session's) and a scripted backend."""
    from memstream.agent.controller import MemoryAgent

    agents = []

    def build(backend, enrich: bool = False, enricher=None, **overrides):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / 'agent.db'}", home=str(tmp_path), **overrides)
        agent = MemoryAgent(make_memory(settings), backend, settings, enricher=enricher, enrich=enrich)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:  # before make_memory closes the memories: enrichment drains into an open memory
        agent.close()
