"""The database-resident index on PostgreSQL (pgvector + full text): every process sees a committed turn at once,
deletes and forget are immediate everywhere, users stay apart, results are shaped as on SQLite, and a server
without pgvector gets an error that says so. Needs MEMSTREAM_TEST_PG_URL (CI starts a PostgreSQL with pgvector)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np

import pytest
from sqlalchemy import create_engine, text

from memstream.config import load_settings
from memstream.errors import UnavailableError
from memstream.memory import NewSession, NewTurn, open_memory
from memstream.retrieval.pg_index import PgIndex
from memstream.retrieval.retriever import Retriever
from tests.conftest import PG_URL, encoded_rounds, reset_postgres
from tests.small_embedder import HashingEmbedder

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(PG_URL is None, reason="MEMSTREAM_TEST_PG_URL not set (CI starts a PostgreSQL server)"),
]

LIFE = [
    NewTurn("user", "My sister Clara moved to Lisbon last spring.", speaker="Ana", event_time=datetime(2024, 5, 2, 10)),
    NewTurn("assistant", "Lisbon is lovely in May. Does she like it?", speaker="Bot", event_time=datetime(2024, 5, 2, 10, 1)),
    NewTurn("user", "She loves the trams and paints the river at sunrise.", speaker="Ana", event_time=datetime(2024, 5, 2, 10, 2)),
    NewTurn("user", "I adopted a grey cat called Pixel in March.", speaker="Ana", event_time=datetime(2024, 6, 9, 9)),
]


@pytest.fixture
def pg_settings(tmp_path):
    reset_postgres(PG_URL)
    return load_settings(db_url=PG_URL, home=str(tmp_path))


def _ids(result):
    return [h.turn.id for h in result.hits]


def test_postgres_url_picks_the_database_index_and_sqlite_keeps_faiss(pg_settings, tmp_path):
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        assert isinstance(memory.retriever, PgIndex)
        assert memory.indexer is None  # nothing embedded in the background: keys commit with their rows
    with open_memory(load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path)), HashingEmbedder()) as memory:
        assert isinstance(memory.retriever, Retriever)
    override = pg_settings.model_copy(update={"retrieval": pg_settings.retrieval.model_copy(update={"index_backend": "memory"})})
    with open_memory(override, HashingEmbedder()) as memory:
        assert isinstance(memory.retriever, Retriever)


def test_two_processes_see_each_others_writes_deletes_and_forget_at_once(pg_settings):
    """Two Memory objects on one database stand for two server processes: no refresh, no wait."""
    with open_memory(pg_settings, HashingEmbedder()) as a, open_memory(pg_settings, HashingEmbedder()) as b:
        stored = a.add("alice", "chat", LIFE[:3])
        for mode in ("dense", "bm25", "hybrid", "memstream"):
            assert stored[0].id in _ids(b.search("alice", "Clara moved to Lisbon", mode=mode)), mode
        # The round key of the last turn is refreshed when its neighbour arrives through the other process.
        later = b.add("alice", "chat", [LIFE[3]])
        assert _ids(a.search("alice", "grey cat Pixel", mode="dense"))[0] == later[0].id
        keys = a.store.read_sql("SELECT count(*) FROM index_keys WHERE user_id = 'alice'")[0][0]
        assert keys == 3 * 4  # turn, round and statement keys of four turns, the refreshed round key replaced

        assert b.delete_turn("alice", stored[0].id)
        for mode in ("dense", "bm25", "memstream"):
            assert stored[0].id not in _ids(a.search("alice", "Clara moved to Lisbon", mode=mode)), mode
        assert a.store.read_sql("SELECT count(*) FROM index_keys WHERE turn_id = :t", t=stored[0].id)[0][0] == 0

        fact = a.add_fact("alice", "ana.cat", "Ana has a grey cat named Pixel", [later[0].id])
        assert later[0].id in _ids(b.search("alice", "named Pixel", mode="memstream"))
        assert b.retriever.facts_of_turns("alice", [later[0].id])[0] == {fact.id}

        b.forget_user("alice")
        assert a.store.read_sql("SELECT count(*) FROM index_keys WHERE user_id = 'alice'")[0][0] == 0
        with pytest.raises(Exception, match="alice"):
            a.search("alice", "Lisbon")


def test_users_never_see_each_other(pg_settings):
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        memory.add("alice", "chat", LIFE[:2])
        bob = memory.add("bob", "chat", [NewTurn("user", "Bob moved to Lisbon too, with his cat Pixel.")])
        for mode in ("dense", "bm25", "memstream"):
            result = memory.search("alice", "Lisbon cat Pixel", mode=mode, k=50)
            assert {h.turn.user_id for h in result.hits} == {"alice"}, mode
            assert bob[0].id not in _ids(result)
        assert {h.turn.user_id for h in memory.search("bob", "Lisbon").hits} == {"bob"}


def test_results_are_shaped_like_the_sqlite_path(pg_settings, tmp_path):
    """Same rows, same embedder, same fusion: the same hits, ranks, sources and time window on both backends."""
    sessions = [NewSession("chat", LIFE[:3], started_at=datetime(2024, 5, 2, 10)), NewSession("chat", LIFE[3:], started_at=datetime(2024, 6, 9, 9))]
    sqlite = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path))
    results = {}
    for name, settings in (("sqlite", sqlite), ("postgres", pg_settings)):
        with open_memory(settings, HashingEmbedder(), background=False) as memory:
            memory.ingest("alice", sessions)
            memory.flush(10)
            result = memory.search("alice", "what did Clara do in May 2024?", now=datetime(2024, 7, 1))
            results[name] = result
    sq, pg = results["sqlite"], results["postgres"]
    assert pg.time_window == sq.time_window and pg.time_window is not None
    assert pg.mode == sq.mode == "memstream"
    assert [h.turn.text for h in pg.hits][:1] == [h.turn.text for h in sq.hits][:1]
    assert {h.turn.text for h in pg.hits} == {h.turn.text for h in sq.hits}
    assert set(pg.hits[0].to_dict()) == set(sq.hits[0].to_dict())
    assert all(h.dense_score is not None for h in pg.hits)
    assert [h.rank for h in pg.hits] == list(range(1, len(pg.hits) + 1))
    assert {"embed", "dense", "lexical", "fuse", "fetch", "total"} <= set(pg.timings)


def test_time_window_and_conversation_filters(pg_settings):
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        may = memory.add("alice", "chat", LIFE[:3])
        june = memory.add("alice", "other", [LIFE[3]])
        flt = memory.search("alice", "what happened in June 2024?", now=datetime(2024, 7, 1), time_mode="filter", k=20)
        assert _ids(flt) == [june[0].id]
        conv = memory.search("alice", "Lisbon cat", conversation="chat", k=20)
        assert set(_ids(conv)) <= {t.id for t in may} and conv.hits


def test_large_user_goes_through_hnsw_with_iterative_scan(pg_settings):
    """Past ann_threshold keys the dense lists come from the HNSW index, filtered by user (iterative scan)."""
    settings = pg_settings.model_copy(update={"retrieval": pg_settings.retrieval.model_copy(update={"ann_threshold": 2})})
    with open_memory(settings, HashingEmbedder()) as memory:
        memory.add("bob", "chat", [NewTurn("user", f"Bob note {i} about gardening") for i in range(20)])
        stored = memory.add("alice", "chat", LIFE)
        hits = memory.search("alice", "grey cat called Pixel", mode="dense", k=4)
        assert _ids(hits)[0] == stored[3].id and {h.turn.user_id for h in hits.hits} == {"alice"}
        with memory.store.engine.begin() as conn:
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            plan = "\n".join(r[0] for r in conn.execute(text(
                "EXPLAIN SELECT key_id FROM index_keys WHERE user_id = 'alice' AND kind = 0 "
                "ORDER BY embedding <#> (SELECT embedding FROM index_keys LIMIT 1) LIMIT 10"
            )))
        assert "ix_index_keys" in plan  # an index serves it (HNSW or the user btree, as the planner costs it)


def test_rows_without_keys_are_indexed_at_open(pg_settings):
    """A database written by the in-process path (no keys) gets its keys the first time the database index opens."""
    memory_path = pg_settings.model_copy(update={"retrieval": pg_settings.retrieval.model_copy(update={"index_backend": "memory"})})
    with open_memory(memory_path, HashingEmbedder(), cache_dir=None) as memory:
        stored = memory.add("alice", "chat", LIFE[:2])
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        assert memory.retriever.indexed_turns("alice") == 2
        assert _ids(memory.search("alice", "Clara Lisbon", mode="dense"))[0] == stored[0].id


def test_a_server_without_pgvector_gets_a_clear_error(pg_settings, monkeypatch):
    from memstream.retrieval import pg_schema

    monkeypatch.setattr(pg_schema, "has_pgvector", lambda conn: False)
    with pytest.raises(UnavailableError, match="pgvector") as caught:
        open_memory(pg_settings, HashingEmbedder())
    assert "index_backend = 'memory'" in str(caught.value)
    # The plain-PostgreSQL path stays open to such a server.
    override = pg_settings.model_copy(update={"retrieval": pg_settings.retrieval.model_copy(update={"index_backend": "memory"})})
    with open_memory(override, HashingEmbedder(), cache_dir=None) as memory:
        memory.add("alice", "chat", LIFE[:1])
        memory.flush(10)
        assert memory.search("alice", "Lisbon", mode="bm25").hits


def test_model_change_is_refused(pg_settings):
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        memory.add("alice", "chat", LIFE[:1])
    with pytest.raises(Exception, match="test-hashing-64"):
        open_memory(pg_settings, HashingEmbedder(name="another-model"))


def test_pgvector_is_installed_on_the_test_server():
    """CI's PostgreSQL must have pgvector, or the tests above would prove nothing about it."""
    engine = create_engine(PG_URL)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is not None
    engine.dispose()


def test_lexical_ranking_weighs_rare_words_like_bm25(pg_settings, tmp_path):
    """A rare name outranks a common word said three times (idf), on PostgreSQL as in the in-process BM25."""
    turns = [
        NewTurn("user", "we walked and walked and walked home"),
        NewTurn("user", "Pixel slept all afternoon"),
        NewTurn("user", "they walked to the market"),
        NewTurn("user", "she walked the dog"),
        NewTurn("user", "he walked in the rain"),
    ]
    sqlite = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path))
    for settings in (pg_settings, sqlite):
        with open_memory(settings, HashingEmbedder()) as memory:
            stored = memory.add("alice", "chat", turns)
            ranked = _ids(memory.search("alice", "Pixel walked", mode="bm25", k=5))
            assert ranked[0] == stored[1].id, settings.database_url
            assert set(ranked) == {t.id for t in stored}


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering every text it embedded."""

    def __init__(self):
        super().__init__(64, "test-hashing-64")
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts += list(texts)
        return super().embed(texts)


def _admin_engine():
    """A connection of the test's own, beside the memory's pool."""
    return create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1) if PG_URL.startswith("postgresql://") else PG_URL)


def _unembedded(memory) -> list[int]:
    return [row[0] for row in memory.store.read_sql("SELECT turn_id FROM index_keys WHERE embedding IS NULL ORDER BY turn_id")]


def test_a_live_turns_round_key_waits_for_its_next_turn(pg_settings):
    """A chat write embeds the new turn's turn and statement keys and the previous turn's now complete round key:
    three texts, not four (the newest round key would be embedded again when its neighbour arrives)."""
    embedder = CountingEmbedder()
    with open_memory(encoded_rounds(pg_settings), embedder) as memory:
        first = memory.add("alice", "chat", [LIFE[0]])
        assert _unembedded(memory) == [first[0].id]
        assert first[0].id in _ids(memory.search("alice", "Clara moved to Lisbon", mode="dense"))  # its turn key
        embedder.texts.clear()
        second = memory.add("alice", "chat", [LIFE[1]])
        assert len(embedder.texts) == 3
        assert sum(text.count("\n") for text in embedder.texts) == 1  # the one round key embedded holds both turns
        assert _unembedded(memory) == [second[0].id]
        # Nothing older than the deferral window yet: a refresh leaves it; a flush embeds it.
        assert memory.refresh() == 0
        memory.flush()
        assert _unembedded(memory) == []
        vector = memory.store.read_sql("SELECT embedding::text FROM index_keys WHERE key_id = :k", k=second[0].id * 8 + 1)[0][0]
        round_text = [t for t in embedder.texts if t.startswith("[") and "Does she like it?" in t][-1]
        expected = embedder.embed([round_text])[0]
        assert np.allclose(np.array(json.loads(vector), dtype=np.float32), expected, atol=1e-6)


def test_deferred_round_keys_past_the_window_are_embedded_by_refresh_and_close(pg_settings):
    embedder = CountingEmbedder()
    with open_memory(encoded_rounds(pg_settings), embedder) as memory:
        stored = memory.add("alice", "chat", LIFE[:2])
        other = memory.add("bob", "chat", [NewTurn("user", "Bob plays the cello.")])
        assert _unembedded(memory) == [stored[1].id, other[0].id]
        assert memory.retriever.embed_deferred(older_than_s=0, limit=1) == 1
        assert _unembedded(memory) == [other[0].id]
        # Ingested as if long ago: a refresh (the server's background loop) embeds it.
        engine = _admin_engine()
        with engine.begin() as conn:
            conn.execute(text("UPDATE turns SET ingested_at = ingested_at - interval '1 hour' WHERE id = :t"), {"t": other[0].id})
        engine.dispose()
        assert memory.refresh() == 1
        assert _unembedded(memory) == []
        memory.add("bob", "chat", [NewTurn("user", "And the piano.")])
    with open_memory(pg_settings, HashingEmbedder(64, "test-hashing-64")) as memory:
        assert _unembedded(memory) == []  # the first memory embedded its last round key at close


def test_a_read_after_the_database_dropped_the_connection_retries_once(pg_settings):
    with open_memory(pg_settings, HashingEmbedder()) as memory:
        memory.add("alice", "chat", LIFE[:2])
        assert len(memory.store.list_turns("alice")) == 2  # the pool now holds a connection
        engine = _admin_engine()
        with engine.connect() as conn:
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar()
        engine.dispose()
        assert killed >= 1
        assert len(memory.store.list_turns("alice")) == 2  # the dead pooled connection fails, the read runs again
