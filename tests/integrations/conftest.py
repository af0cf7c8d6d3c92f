"""Integrations run over a real SQLite memory; fast tests inject the small hashing embedder."""

from __future__ import annotations

import pytest

from memstream.config import Settings, load_settings
from tests.small_embedder import HashingEmbedder


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(db_url=f"sqlite:///{tmp_path / 'memory.db'}")


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture
def memory(settings, embedder):
    from memstream.memory import open_memory

    opened = open_memory(settings, embedder)
    yield opened
    opened.close()
