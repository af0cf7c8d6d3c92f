from __future__ import annotations

from datetime import datetime

import pytest

from memstream.errors import NotFoundError
from memstream.memory.importers import load_file
from memstream.memory.model import NewSession, NewTurn
from memstream.memory.store import MemoryStore, UnknownUserError
from tests.conftest import LOCOMO_DEV, LONGMEMEVAL_SAMPLE


def _content(store: MemoryStore, user: str) -> list[tuple]:
    """What a user remembers, without ids (which differ between users)."""
    rows = []
    for record in store.export_user(user):
        record = dict(record)
        record.pop("id", None)
        record.pop("session", None)
        if record["type"] == "fact":
            record.pop("source_turn_ids")
        rows.append(tuple(sorted((k, repr(v)) for k, v in record.items())))
    return rows


def test_locomo_round_trip_keeps_every_turn_speaker_time_and_source_id(store):
    sessions = load_file(LOCOMO_DEV)
    store.ingest_session_batch("alice", sessions)
    import json

    raw = json.loads(LOCOMO_DEV.read_text())
    expected = {}
    for sample in raw:
        conversation = sample["conversation"]
        for key, turns in conversation.items():
            if key.startswith("session_") and isinstance(turns, list):
                for turn in turns:
                    expected[(sample["sample_id"], turn["dia_id"])] = (turn["speaker"], turn["text"], conversation[key + "_date_time"])
    stored = store.list_turns("alice")
    assert len(stored) == len(expected)
    for turn in stored:
        speaker, text, _date = expected[(turn.conversation_id, turn.source_id)]
        assert turn.speaker == speaker
        assert turn.text.startswith(text)
    first = store.list_turns("alice", conversation_id="conv-26", limit=1)[0]
    assert first.event_time == datetime(2023, 5, 8, 13, 56)  # "1:56 pm on 8 May, 2023"
    assert {c.conversation_id for c in store.conversations("alice")} == {s["sample_id"] for s in raw}


def test_longmemeval_round_trip_keeps_has_answer_and_session_ids(store):
    store.ingest_sessions("alice", load_file(LONGMEMEVAL_SAMPLE))
    turns = store.list_turns("alice")
    assert len(turns) == 48
    evidence = [t for t in turns if t.metadata["has_answer"]]
    assert evidence, "has_answer flags must survive ingest"
    sessions = store.sessions("alice")
    assert sessions[0].external_id == "answer_a25d4a91_1"
    assert sessions[0].started_at == datetime(2023, 5, 25, 20, 21)  # "2023/05/25 (Thu) 20:21"
    assert all(t.source_id.split(":")[0] in {s.external_id for s in sessions} for t in turns)


def test_export_then_import_into_another_user_is_identical(store):
    store.ingest_sessions("alice", load_file(LONGMEMEVAL_SAMPLE))
    first_turn = store.list_turns("alice", limit=1)[0]
    store.add_fact("alice", "user.5k_time", "personal best 27:12", [first_turn.id], valid_from=datetime(2023, 5, 1))
    store.add_fact("alice", "user.5k_time", "personal best 25:50", [first_turn.id], valid_from=datetime(2023, 5, 27))
    store.set_pinned("alice", first_turn.id)
    counts = store.import_records("bob", list(store.export_user("alice")))
    assert counts == {"sessions": 4, "turns": 48, "facts": 2}
    assert _content(store, "bob") == _content(store, "alice")
    assert store.get_facts("bob")[0].source_turn_ids == [store.list_turns("bob", limit=1)[0].id]


def test_users_are_isolated_on_every_read_path(store):
    store.ingest_sessions("a", load_file(LONGMEMEVAL_SAMPLE))
    store.add_fact("a", "user.secret", "a's secret")
    store.ingest_sessions("b", [NewSession("conv", [NewTurn("user", "b's own turn")])])
    a_ids = [t.id for t in store.list_turns("a")]
    a_session = store.sessions("a")[0].id

    assert all(t.user_id == "b" for t in store.list_turns("b"))
    assert store.get_turns("b", a_ids) == []
    assert store.get_turn("b", a_ids[0]) is None
    assert store.get_facts("b") == []
    assert store.get_session("b", a_session) is None
    assert [c.conversation_id for c in store.conversations("b")] == ["conv"]
    assert store.sessions("b", conversation_id=store.sessions("a")[0].conversation_id) == []
    assert store.recent_turns("b", store.sessions("a")[0].conversation_id, 10) == []
    assert all(r.get("text") != "a's secret" for r in store.export_user("b"))
    assert store.stats("b")["turns"] == 1
    # Writes through b cannot touch a's rows either.
    assert store.delete_turn("b", a_ids[0]) is False
    assert store.set_pinned("b", a_ids[0]) is False
    store.set_session_summary("b", a_session, "overwritten")
    assert store.get_session("a", a_session).summary is None
    with pytest.raises(NotFoundError):
        store.add_turns("b", "conv", [NewTurn("user", "x")], session_id=a_session)

    store.forget_user("a")
    assert store.list_turns("a") == [] and store.get_facts("a") == [] and store.sessions("a") == []
    assert [t.text for t in store.list_turns("b")] == ["b's own turn"]
    with pytest.raises(UnknownUserError):
        store.require_user("a")


def test_knowledge_update_closes_the_old_fact_and_keeps_it(store):
    old = store.add_fact("u", "User.Job", "works at Acme", valid_from=datetime(2023, 1, 1))
    duplicate = store.add_fact("u", "user.job", "Works at Acme", valid_from=datetime(2023, 2, 1))
    assert duplicate.id == old.id
    new = store.add_fact("u", "user.job", "works at Beta", valid_from=datetime(2023, 6, 1))
    facts = {f.id: f for f in store.get_facts("u")}
    assert facts[old.id].valid_to == datetime(2023, 6, 1)
    assert facts[new.id].is_current
    assert [f.text for f in store.get_facts("u", current_only=True)] == ["works at Beta"]


def test_live_turns_append_to_latest_session_in_order(store):
    first = store.add_turns("u", "c", [NewTurn("user", "one"), NewTurn("assistant", "two")])
    second = store.add_turns("u", "c", [NewTurn("user", "three")])
    assert first[0].session_id == second[0].session_id
    assert [t.position for t in first + second] == [0, 1, 2]
    assert [t.text for t in store.recent_turns("u", "c", 2)] == ["two", "three"]


def test_bad_rows_are_rejected_and_write_nothing(store):
    with pytest.raises(ValueError, match="user id"):
        store.ingest_sessions("", [NewSession("c", [NewTurn("user", "x")])])
    with pytest.raises(ValueError, match="role"):
        store.ingest_sessions("u", [NewSession("c", [NewTurn("user", "ok"), NewTurn("robot", "x")])])
    assert store.count_turns() == 0 and store.sessions("u") == []
    with pytest.raises(ValueError, match="missing field"):
        store.import_records("u", [{"type": "session", "id": 1}])
    assert store.count_turns() == 0


def test_nul_bytes_and_unicode_survive(store):
    text = "emoji 🎉, RTL עברית, NUL\x00byte, control \x07"
    turn = store.add_turns("u", "c", [NewTurn("user", text)])[0]
    assert store.get_turn("u", turn.id).text == text.replace("\x00", "")


def test_unopenable_database_gives_a_clear_error(tmp_path):
    from memstream.memory.store import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError, match="does not exist"):
        MemoryStore(f"sqlite:///{tmp_path}/missing-dir/x.db")
    with pytest.raises(DatabaseUnavailableError):
        MemoryStore("nosuchdialect://x")
    with pytest.raises(DatabaseUnavailableError):
        MemoryStore("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_a_database_made_before_the_id_order_indexes_gets_them_and_keeps_its_rows(db_url):
    from sqlalchemy import inspect, text

    with MemoryStore(db_url) as store:
        turn = store.add_turns("u", "c", [NewTurn("user", "I work at Acme.")])[0]
        with store.engine.begin() as conn:  # back to the first schema: its session index, no later step recorded
            conn.execute(text("DROP INDEX ix_turns_session_user"))
            conn.execute(text("DROP INDEX ix_facts_user_id"))
            conn.execute(text("CREATE INDEX ix_turns_session ON turns (session_id)"))
            conn.execute(text("DELETE FROM schema_migrations WHERE name <> '001_initial'"))
    with MemoryStore(db_url) as store:
        with store.engine.connect() as conn:
            applied = [row[0] for row in conn.execute(text("SELECT name FROM schema_migrations ORDER BY name"))]
        assert applied == ["001_initial", "002_id_order_indexes"]
        inspector = inspect(store.engine)
        turn_indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("turns")}
        assert turn_indexes.get("ix_turns_session_user") == ["session_id", "user_id", "id"] and "ix_turns_session" not in turn_indexes
        assert {i["name"]: i["column_names"] for i in inspector.get_indexes("facts")}.get("ix_facts_user_id") == ["user_id", "id"]
        assert [t.text for t in store.list_turns("u", session_id=turn.session_id)] == ["I work at Acme."]


def test_session_reads_bounded_by_id(store):
    turns = store.add_turns("u", "c", [NewTurn("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(10)])
    session_id, ids = turns[0].session_id, [t.id for t in turns]
    before = store.list_turns("u", session_id=session_id, before_id=ids[6], limit=3, newest_first=True)
    assert [t.id for t in before] == [ids[5], ids[4], ids[3]]
    assert [t.id for t in store.list_turns("u", session_id=session_id, after_id=ids[7])] == ids[8:]
    assert store.count_turns("u", session_id=session_id) == 10 and store.count_turns("other", session_id=session_id) == 0
    facts = [store.add_fact("u", f"user.thing{i}", f"fact {i}", [ids[i]]) for i in range(4)]
    assert [f.id for f in store.get_facts("u", after_id=facts[1].id)] == [facts[2].id, facts[3].id]
    assert [f.id for f in store.get_facts("u", subjects=["User.Thing3", "user.thing0"])] == [facts[0].id, facts[3].id]


def test_every_combination_of_turn_and_fact_filters_reads_what_filtering_in_python_gives(store):
    """list_turns and get_facts build one statement per combination of filters present (statements.turns_where,
    facts_where) and bind the values: each combination, against the same filter written in Python."""
    import itertools
    from datetime import timedelta

    start = datetime(2024, 1, 1, 9, 0)
    for day in range(4):
        for conversation in ("a", "b"):
            store.ingest_sessions("u", [NewSession(conversation, [NewTurn("user", f"{conversation} day {day} turn {i}",
                                                                          event_time=start + timedelta(days=day, minutes=i)) for i in range(3)])])
    store.add_turns("other", "a", [NewTurn("user", "not u's")])
    every = store.list_turns("u")
    assert len(every) == 24
    session = every[7].session_id
    filters = {"conversation_id": ("b", lambda t: t.conversation_id == "b"),
               "session_id": (session, lambda t: t.session_id == session),
               "after_id": (every[4].id, lambda t: t.id > every[4].id),
               "before_id": (every[20].id, lambda t: t.id < every[20].id),
               "since": (start + timedelta(days=1), lambda t: t.event_time >= start + timedelta(days=1)),
               "until": (start + timedelta(days=3), lambda t: t.event_time < start + timedelta(days=3))}
    for count in range(len(filters) + 1):
        for names in itertools.combinations(filters, count):
            for newest_first, limit, offset in ((False, None, 0), (True, 2, 0), (False, 3, 1), (True, None, 2)):
                expected = [t.id for t in every if all(filters[n][1](t) for n in names)]
                expected = (expected[::-1] if newest_first else expected)[offset:]
                expected = expected[:limit] if limit is not None else expected
                got = store.list_turns("u", **{n: filters[n][0] for n in names}, newest_first=newest_first, limit=limit, offset=offset)
                assert [t.id for t in got] == expected, (names, newest_first, limit, offset)
    facts = [store.add_fact("u", f"user.thing{i % 3}", f"fact {i}", [every[i].id]) for i in range(6)]
    store.add_fact("other", "user.thing0", "not u's", [])
    current = {f.id for f in store.get_facts("u", current_only=True)}
    assert current and current < {f.id for f in facts}  # a newer fact on a subject closes the older one
    fact_filters = {"ids": ([facts[1].id, facts[4].id, facts[5].id], lambda f: f.id in (facts[1].id, facts[4].id, facts[5].id)),
                    "current_only": (True, lambda f: f.id in current),
                    "subject": (" User.Thing1 ", lambda f: f.subject == "user.thing1"),
                    "subjects": (["user.thing0", "USER.THING2"], lambda f: f.subject in ("user.thing0", "user.thing2")),
                    "after_id": (facts[2].id, lambda f: f.id > facts[2].id)}
    for count in range(len(fact_filters) + 1):
        for names in itertools.combinations(fact_filters, count):
            expected = [f.id for f in store.get_facts("u") if all(fact_filters[n][1](f) for n in names)]
            got = store.get_facts("u", **{n: fact_filters[n][0] for n in names})
            assert [f.id for f in got] == expected, names


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "row-by-row"])
def test_stored_vectors_land_on_their_own_rows_in_chunks(store, monkeypatch, update_from):
    from memstream.memory import store as store_module

    monkeypatch.setattr(store_module, "EMBEDDINGS_PER_STATEMENT", 2)  # 5 vectors: chunks of 2, 2 and 1
    store._update_from = update_from and store._update_from
    turns = store.add_turns("u", "c", [NewTurn("user", f"turn {i}") for i in range(6)])
    blobs = {t.id: bytes([i]) * 16 for i, t in enumerate(turns[:5])}
    store.set_embeddings("turn", blobs, "model-a")
    assert [store.embedding_of("turn", t.id) for t in turns] == [(blobs[t.id], "model-a") for t in turns[:5]] + [(None, None)]
    fact = store.add_fact("u", "user.thing", "a fact", [turns[0].id])
    store.set_embeddings("fact", {fact.id: b"f" * 16}, "model-b")
    assert store.embedding_of("fact", fact.id) == (b"f" * 16, "model-b")
