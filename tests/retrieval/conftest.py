"""Tests of the index itself: the rows come from a Memory opened without indexes, and each test drives a
retriever built by `build_retriever` (one MiniLM per test session, the root conftest's `embedders`)."""

from __future__ import annotations

from datetime import datetime

import pytest

from memstream.memory.model import NewSession, NewTurn


@pytest.fixture
def settings(sqlite_url, isolated_home):
    from memstream.config import load_settings

    return load_settings(db_url=sqlite_url, home=str(isolated_home))


@pytest.fixture
def make_retriever(embedders):
    """make_retriever(settings, store, cache_dir="auto", sync=True, load_embedder=True) -> a Retriever over `store`
    that embeds inline (no background indexer: these tests are about the index), caught up unless sync=False."""
    from memstream.memory.core import build_retriever
    from memstream.memory.index_files import cache_dir_for

    def make(settings, store, cache_dir="auto", sync: bool = True, load_embedder: bool = True):
        e = settings.embedder
        embedder = embedders.for_settings(e) if load_embedder else None
        where = cache_dir_for(settings, store) if cache_dir == "auto" else cache_dir
        return build_retriever(settings, store, embedder, cache_dir=where, sync=sync)

    return make


@pytest.fixture
def bare_store(settings):
    """The store of a Memory opened without indexes over the test's database: the rows a retriever indexes."""
    from memstream.memory import open_memory

    with open_memory(settings, index=False) as memory:
        yield memory.store


def session(conversation: str, when: datetime, lines: list[tuple[str, str]], external_id: str | None = None) -> NewSession:
    """A session of (speaker, text) lines, all said at `when`."""
    return NewSession(
        conversation_id=conversation,
        started_at=when,
        external_id=external_id,
        turns=[
            NewTurn(role="user" if i % 2 == 0 else "assistant", text=text, speaker=speaker, event_time=when, metadata={"source_id": f"{external_id or 's'}:{i}"})
            for i, (speaker, text) in enumerate(lines)
        ],
    )


FILLER = [
    ("Ann", "The weather was grey all afternoon, so we stayed inside."),
    ("Bob", "I watched a documentary about deep sea creatures."),
    ("Ann", "Work has been busy with quarterly reports."),
    ("Bob", "My neighbour keeps mowing the lawn at seven in the morning."),
    ("Ann", "We ordered pizza and played board games."),
    ("Bob", "The train was late again on Tuesday."),
]


def plant(store):
    """User 'ann' with three dated sessions, one planted fact in each; user 'bob' with a look-alike.

    Retrieval reads the store through the same SQL on SQLite and PostgreSQL (the store's own
    tests cover both), so these tests use SQLite only: their cost is the embedding model."""
    store.ingest_sessions(
        "ann",
        [
            session("c1", datetime(2023, 3, 10, 18, 0), FILLER[:3] + [("Ann", "I adopted a grey kitten named Pixel from the shelter.")] + FILLER[3:], "S1"),
            session("c1", datetime(2023, 5, 20, 9, 30), FILLER[:2] + [("Ann", "I ran the charity half marathon in 2 hours 5 minutes.")] + FILLER[2:], "S2"),
            session("c1", datetime(2023, 6, 14, 20, 0), FILLER[1:4] + [("Ann", "My sister Clara moved to Lisbon for a new job.")] + FILLER[4:], "S3"),
        ],
    )
    store.ingest_sessions("bob", [session("c9", datetime(2023, 5, 1, 12, 0), [("Bob", "I adopted a black kitten named Pixel too.")] + FILLER, "B1")])
    return store


@pytest.fixture
def planted(bare_store):
    return plant(bare_store)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, embedders):
    """A planted Memory (its store and retriever), opened once per module, for tests that only read."""
    from memstream.config import load_settings
    from memstream.memory import open_memory

    root = tmp_path_factory.mktemp("shared")
    settings = load_settings(db_url=f"sqlite:///{root / 'memstream.db'}", home=str(root))
    with open_memory(settings, index=False) as rows_only:
        plant(rows_only.store)
    with open_memory(settings, embedders=embedders) as memory:
        assert memory.flush(120), "the background indexer did not embed the planted sessions"
        yield memory.store, memory.retriever
