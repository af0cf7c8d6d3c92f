"""retrieval.dense_kinds: which key kinds get vectors (by default every kind; ["turn", "fact"] embeds a fifth of the
tokens, reports/dense_kinds_float.md): every kind stays keyword-searchable, a time window ranks turn vectors where
rounds have none, and changing the setting rebuilds an index cache built the other way."""

from __future__ import annotations

from datetime import datetime

import pytest

from memstream.config import ConfigError, load_settings
from memstream.memory import NewTurn, open_memory
from memstream.retrieval.fusion import mode_lists, time_lists
from tests.conftest import PG_URL, reset_postgres
from tests.small_embedder import HashingEmbedder, recording

CHAT = [
    NewTurn("user", "My sister Clara moved to Lisbon last spring.", speaker="Ana", event_time=datetime(2024, 5, 2, 10)),
    NewTurn("assistant", "Lisbon is lovely in May. Does she like it?", speaker="Bot", event_time=datetime(2024, 5, 2, 10, 1)),
    NewTurn("user", "She loves the trams and paints the river at sunrise.", speaker="Ana", event_time=datetime(2024, 5, 2, 10, 2)),
]


TURN_AND_FACT = {"dense_kinds": ["turn", "fact"]}


def sqlite_settings(tmp_path, **retrieval):
    return load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), retrieval=retrieval)


def test_round_and_statement_keys_without_vectors_stay_keyword_searchable(tmp_path):
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(sqlite_settings(tmp_path, **TURN_AND_FACT), embedder) as memory:
        stored = memory.add("ana", "chat", CHAT)
        memory.flush(30)
        # A round key reads "[2 May 2024] Ana: ...", a statement key "On 2 May 2024, Ana said: ...".
        assert sorted(texts) == sorted(f"{t.speaker}: {t.text}" for t in CHAT)
        index = memory.retriever._users["ana"]
        assert set(index.dense) == {"turn"} and len(index.dense["turn"]) == 3
        assert len(index.lexical["round"]) == 3 and len(index.lexical["statement"]) == 3  # every key has its words indexed
        assert memory.search("ana", "Where does Clara live?", k=1).hits[0].turn.id == stored[0].id


def test_every_kind_gets_vectors_by_default(tmp_path):
    assert load_settings().retrieval.dense_kinds == ["turn", "round", "statement", "fact"]
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(sqlite_settings(tmp_path), embedder) as memory:
        memory.add("ana", "chat", CHAT)
        memory.flush(30)
        # Round vectors are pooled from the statement vectors (retrieval.round_vectors): no round text is embedded.
        assert [t for t in texts if t.startswith("On 2 May 2024, ")] and not [t for t in texts if t.startswith("[2 May 2024] ")]
        assert {kind: len(vectors) for kind, vectors in memory.retriever._users["ana"].dense.items()} == {"turn": 3, "round": 3, "statement": 3}


def test_a_cache_built_with_other_dense_kinds_is_rebuilt(tmp_path):
    with open_memory(sqlite_settings(tmp_path, **TURN_AND_FACT), HashingEmbedder()) as memory:
        memory.add("ana", "chat", CHAT)
        memory.flush(30)
    with open_memory(sqlite_settings(tmp_path), HashingEmbedder()) as memory:
        memory.flush(30)
        assert len(memory.retriever._users["ana"].dense["round"]) == 3  # not the saved index without round vectors
    with open_memory(sqlite_settings(tmp_path, **TURN_AND_FACT), HashingEmbedder()) as memory:
        memory.flush(30)
        assert "round" not in memory.retriever._users["ana"].dense


def test_a_cache_saved_before_dense_kinds_were_recorded_loads_as_every_kind(tmp_path):
    """The sidecars of earlier releases name no dense kinds (every kind had vectors) and no round_vectors (encoded):
    opened with those settings, an upgrade does not re-embed."""
    import json

    from memstream.memory.index_files import cache_dir_for

    with open_memory(sqlite_settings(tmp_path, round_vectors="encoded"), HashingEmbedder()) as memory:
        memory.add("ana", "chat", CHAT)
        memory.flush(30)
        sidecar = cache_dir_for(memory.settings, memory.store) / "metadata.json"
    meta = json.loads(sidecar.read_text())
    assert meta.pop("dense_kinds") == ["fact", "round", "statement", "turn"] and meta.pop("round_vectors") == "encoded"
    sidecar.write_text(json.dumps(meta))
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(sqlite_settings(tmp_path, round_vectors="encoded"), embedder) as memory:
        memory.flush(30)
        assert len(memory.retriever._users["ana"].dense["round"]) == 3
    assert texts == []  # the saved vectors were used, nothing embedded again


def test_dense_kinds_must_name_known_kinds_and_include_turn():
    with pytest.raises(ConfigError, match="must include 'turn'"):
        load_settings(retrieval={"dense_kinds": ["round", "statement"]})
    with pytest.raises(ConfigError, match="dense_kinds"):
        load_settings(retrieval={"dense_kinds": ["turn", "paragraph"]})
    assert load_settings(retrieval={"dense_kinds": ["turn", "turn", "fact"]}).retrieval.dense_kinds == ["turn", "fact"]


def test_lists_without_round_vectors_keep_the_keyword_round_list_and_rank_time_windows_by_turn_vectors():
    lists = mode_lists("memstream", True, True, ("turn", "statement", "fact"))
    assert ("dense", "round") not in lists and ("lexical", "round") in lists
    assert time_lists(True, ("turn", "statement", "fact")) == [("dense", "turn"), ("lexical", "round")]
    assert time_lists(True) == [("dense", "round"), ("lexical", "round")]
    assert mode_lists("hybrid", True, True, ("turn",)) == [("dense", "turn"), ("lexical", "turn")]


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="MEMSTREAM_TEST_PG_URL not set (CI starts a PostgreSQL server)")
def test_postgres_writes_round_and_statement_keys_without_vectors_and_never_embeds_them_later(tmp_path):
    from sqlalchemy import create_engine, text

    reset_postgres(PG_URL)
    embedder = HashingEmbedder()
    texts = recording(embedder)
    with open_memory(load_settings(db_url=PG_URL, home=str(tmp_path), retrieval=TURN_AND_FACT), embedder) as memory:
        stored = memory.add("ana", "chat", CHAT)
        assert sorted(texts) == sorted(f"{t.speaker}: {t.text}" for t in CHAT)
        assert memory.retriever.embed_deferred(older_than_s=0) == 0
        assert memory.search("ana", "Where does Clara live?", k=1).hits[0].turn.id == stored[0].id
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, embedding IS NULL FROM index_keys WHERE user_id LIKE '%ana'")).all()
    finally:
        engine.dispose()
    by_kind: dict[int, set[bool]] = {}
    for kind, missing in rows:
        by_kind.setdefault(kind, set()).add(missing)
    assert by_kind == {0: {False}, 1: {True}, 2: {True}}  # turn keys carry vectors, round and statement keys none
