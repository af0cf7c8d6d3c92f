"""One embedder per test session (loading MiniLM costs seconds); each test gets its own store."""

from __future__ import annotations

from datetime import datetime

import pytest

from memstream.memory.model import NewSession, NewTurn


@pytest.fixture(scope="session")
def embedders():
    from memstream.retrieval.embedder import EmbedderCache

    return EmbedderCache()


@pytest.fixture
def settings(sqlite_url, isolated_home):
    from memstream.config import load_settings

    return load_settings(db_url=sqlite_url, home=str(isolated_home))


@pytest.fixture
def make_retriever(embedders):
    from memstream.retrieval.retriever import Retriever

    def make(settings, store, **options):
        return Retriever.from_settings(settings, store, embedders=embedders, **options)

    return make


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
def planted(sqlite_url):
    from memstream.memory.store import MemoryStore

    with MemoryStore(sqlite_url) as store:
        yield plant(store)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, embedders):
    """A planted store and its retriever, built once per module, for tests that only read."""
    from memstream.config import load_settings
    from memstream.memory.store import MemoryStore
    from memstream.retrieval.retriever import Retriever

    root = tmp_path_factory.mktemp("shared")
    settings = load_settings(db_url=f"sqlite:///{root / 'memstream.db'}", home=str(root))
    with MemoryStore(settings.database_url) as store:
        plant(store)
        yield store, Retriever.from_settings(settings, store, embedders=embedders)
