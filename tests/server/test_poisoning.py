"""One bad row must never break every tenant or the next start (issue: year-1 times, list metadata, object
fields). Each exact input from the report gets a 4xx, stores nothing, and every other user is still served;
a row planted straight in the database is skipped by the indexer, reported, and the next start succeeds."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from tests.server.conftest import KEY_ACME

ACME = {"Authorization": f"Bearer {KEY_ACME}"}
GOOD = [{"role": "user", "text": "I keep bees on the roof of the library.", "time": "2023-04-01T10:00:00"}]


def session(**fields):
    return {"type": "session", "id": 1, "conversation_id": "c", "started_at": "2023-01-01T00:00:00", **fields}


def turn(**fields):
    return {"type": "turn", "id": 1, "session": 1, "conversation_id": "c", "role": "user", "text": "hello",
            "event_time": "2023-01-01T00:00:00", **fields}


ADDS = {
    "year 1": "0001-01-01T00:00:00",
    "year 1 at -05:00": "0001-01-01T12:00:00-05:00",
    "year 1 at +14:00": "0001-01-01T00:00:00+14:00",
}
IMPORTS = {
    "event_time year 1": [session(), turn(event_time="0001-01-01T00:00:00")],
    "metadata a list": [session(), turn(metadata=[1, 2])],
    "metadata a string": [session(), turn(metadata="x")],
    "speaker an object": [session(), turn(speaker={"name": "x"})],
    "summary an object": [session(summary={"text": "x"})],
    "fact valid_from null": [session(), turn(), {"type": "fact", "subject": "s", "text": "t", "valid_from": None}],
    "id a list": [session(id=[1]), turn()],
    "session an object": [session(), turn(session={"id": 1})],
    "source_turn_ids 5": [session(), turn(), {"type": "fact", "subject": "s", "text": "t", "valid_from": "2023-01-01T00:00:00",
                                              "source_turn_ids": 5}],
}


def memories_of(server, user):
    return httpx.get(f"{server.url}/v1/memories", params={"user": user}, headers=ACME, timeout=30)


def assert_everyone_else_served(server):
    added = httpx.post(f"{server.url}/v1/memories", json={"user": "alice", "turns": GOOD}, headers=ACME, timeout=60)
    assert added.status_code == 201, added.text
    found = httpx.post(f"{server.url}/v1/memories/search", json={"user": "alice", "query": "bees on the roof"}, headers=ACME, timeout=60)
    assert found.status_code == 200 and found.json()["data"], found.text
    assert httpx.get(f"{server.url}/ready", timeout=30).status_code == 200


@pytest.mark.parametrize("case", list(ADDS))
def test_out_of_range_times_are_refused_and_store_nothing(memory_server, case):
    body = {"user": "mallory", "turns": [{"role": "user", "text": "hello", "time": ADDS[case]}]}
    answer = httpx.post(f"{memory_server.url}/v1/memories", json=body, headers=ACME, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "out of range" in answer.json()["error"]["message"]
    assert memories_of(memory_server, "mallory").status_code == 404  # nothing stored: the user does not exist
    assert_everyone_else_served(memory_server)


@pytest.mark.parametrize("case", list(IMPORTS))
def test_bad_import_records_are_refused_and_store_nothing(memory_server, case):
    body = "\n".join(json.dumps(record) for record in IMPORTS[case])
    answer = httpx.post(f"{memory_server.url}/v1/users/mallory/import", content=body,
                        headers={**ACME, "Content-Type": "application/x-ndjson"}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith("record ")  # names the line at fault
    assert memories_of(memory_server, "mallory").status_code == 404
    assert_everyone_else_served(memory_server)


def test_a_planted_unindexable_row_is_skipped_reported_and_the_next_start_succeeds(start_server, server_settings):
    first = start_server(server_settings)
    assert httpx.post(f"{first.url}/v1/memories", json={"user": "alice", "turns": GOOD}, headers=ACME, timeout=60).status_code == 201
    first.stop()
    # A row written by an older version or by hand: year 1, metadata a list. Straight into the database.
    path = server_settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        session_id = db.execute("SELECT id FROM sessions LIMIT 1").fetchone()[0]
        db.execute(
            "INSERT INTO turns (user_id, conversation_id, session_id, position, role, speaker, text, event_time, ingested_at, pinned, metadata)"
            " VALUES ('acme/mallory', 'c', ?, 0, 'user', NULL, 'poison', '0001-01-01 00:00:00.000000', '2023-01-01 00:00:00.000000', 0, '[1, 2]')",
            (session_id,),
        )
    second = start_server(server_settings)  # the next start: must not fail
    ready = httpx.get(f"{second.url}/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["index"]["skipped"] >= 1  # reported, not hidden
    assert_everyone_else_served(second)
    listed = memories_of(second, "alice")
    assert listed.status_code == 200 and listed.json()["data"][0]["text"] == GOOD[0]["text"]


def test_memory_stats_reports_a_planted_unindexable_row(tmp_path):
    from typer.testing import CliRunner

    from memstream.cli import app
    from memstream.config import load_settings
    from memstream.memory import NewTurn, open_memory

    db = f"sqlite:///{tmp_path / 'm.db'}"
    with open_memory(load_settings(db_url=db), index=False) as memory:
        memory.add("alice", "c", [NewTurn("user", "fine")])
    with sqlite3.connect(tmp_path / "m.db") as connection:
        connection.execute("UPDATE turns SET event_time = '0001-01-01 00:00:00.000000'")
    result = CliRunner().invoke(app, ["memory", "stats", "--json", "--db", db])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["unindexable_turns"] == 1
