"""A keyless local server refuses what a web page could send (cross-origin text/plain writes, rebound Host
names); a repeated Idempotency-Key stores once and returns the first answer."""

from __future__ import annotations

import json

import httpx
import pytest

from memstream.config import load_settings
from memstream.memory.store import MemoryStore
from tests.server.test_memory_rest import ACME, GLOBEX, TURNS, add

EXPORT = "\n".join(json.dumps(r) for r in [
    {"type": "session", "id": 1, "conversation_id": "c", "started_at": "2023-05-01T10:00:00", "summary": None, "metadata": {}},
    {"type": "turn", "id": 1, "session": 1, "conversation_id": "c", "role": "user", "speaker": "user",
     "text": "The spare key is under the blue pot.", "event_time": "2023-05-01T10:00:00", "metadata": {}},
]) + "\n"


@pytest.fixture
def keyless_server(start_server, tmp_path):
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'keyless.db'}", home=str(tmp_path / "home"), **{"agent.enrich": False})
    server = start_server(settings)
    server.settings = settings
    return server


def users(settings) -> list[str]:
    with MemoryStore(settings.database_url) as store:
        return store.users()


def test_cross_origin_text_plain_import_is_refused(keyless_server):
    # The finding: this answered 201 and stored the turns; a web page the user visits could plant memories.
    url = keyless_server.url
    planted = httpx.post(f"{url}/v1/users/victim/import", content=EXPORT.encode(),
                         headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert planted.status_code == 415 and planted.json()["error"]["code"] == "unsupported_media_type"
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        assert httpx.post(f"{url}/v1/users/victim/import", content=EXPORT.encode(), headers=headers).status_code == 415
        assert httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "hi"}]}',
                          headers=headers).status_code == 415
    assert users(keyless_server.settings) == []
    # The same import as NDJSON (what a program sends) is stored.
    ok = httpx.post(f"{url}/v1/users/victim/import", content=EXPORT.encode(), headers={"Content-Type": "application/x-ndjson"})
    assert ok.status_code == 201 and users(keyless_server.settings) == ["victim"]


def test_a_rebound_host_name_is_refused(keyless_server):
    url = keyless_server.url
    rebound = httpx.get(f"{url}/v1/memories", params={"user": "victim"}, headers={"Host": "evil.example"})
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    write = httpx.post(f"{url}/v1/memories", headers={"Host": f"evil.example:{keyless_server.port}"},
                       json={"user": "victim", "turns": [{"role": "user", "text": "planted"}]})
    assert write.status_code == 400 and users(keyless_server.settings) == []
    for host in (f"localhost:{keyless_server.port}", f"127.0.0.1:{keyless_server.port}", "localhost"):
        assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200


def test_a_repeated_idempotency_key_stores_once(memory_server, server_settings):
    key = {"Idempotency-Key": "add-7f3a"}
    first = httpx.post(f"{memory_server.url}/v1/memories", headers={**ACME, **key}, timeout=60,
                       json={"user": "alice", "conversation": "history", "turns": TURNS})
    again = httpx.post(f"{memory_server.url}/v1/memories", headers={**ACME, **key}, timeout=60,
                       json={"user": "alice", "conversation": "history", "turns": TURNS})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/alice")) == len(TURNS)
    # The same key with another body is a client mistake, and stores nothing.
    other = httpx.post(f"{memory_server.url}/v1/memories", headers={**ACME, **key},
                       json={"user": "alice", "turns": [{"role": "user", "text": "something else"}]})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # Keys belong to a tenant: globex's same key is its own write.
    theirs = httpx.post(f"{memory_server.url}/v1/memories", headers={**GLOBEX, **key}, timeout=60,
                        json={"user": "alice", "conversation": "history", "turns": TURNS})
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/alice")) == len(TURNS) and len(store.list_turns("globex/alice")) == len(TURNS)
    # Without a key, a repeat stores again (the old behaviour, for clients that want it).
    add(memory_server)
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/alice")) == 2 * len(TURNS)


def test_a_repeated_idempotency_key_imports_once(memory_server, server_settings):
    headers = {**ACME, "Content-Type": "application/x-ndjson", "Idempotency-Key": "import-1"}
    first = httpx.post(f"{memory_server.url}/v1/users/bob/import", content=EXPORT.encode(), headers=headers, timeout=60)
    again = httpx.post(f"{memory_server.url}/v1/users/bob/import", content=EXPORT.encode(), headers=headers, timeout=60)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/bob")) == 1
    bad_key = httpx.post(f"{memory_server.url}/v1/users/bob/import", content=EXPORT.encode(),
                         headers={**headers, "Idempotency-Key": "x" * 201})
    assert bad_key.status_code == 400 and bad_key.json()["error"]["param"] == "Idempotency-Key"


def _as_if_the_process_died_after_committing(settings, key: str) -> None:
    """The key's row as a process killed between the write's commit and its answer leaves it: the outcome (written in
    the write's own transaction) is there, the recorded answer is not, and the claim is old enough to take over."""
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        row = conn.execute(sa.text("SELECT outcome FROM server_idempotency WHERE key = :k"), {"k": key}).one()
        assert row.outcome is not None  # committed together with the turns
        conn.execute(sa.text("UPDATE server_idempotency SET status = NULL, response = NULL, claimed_at = :t WHERE key = :k"),
                     {"k": key, "t": "2000-01-01 00:00:00"})
    engine.dispose()


def test_a_retry_after_a_crash_between_commit_and_answer_stores_once(memory_server, server_settings):
    key = {"Idempotency-Key": "add-crash-1"}
    body = {"user": "alice", "conversation": "history", "turns": TURNS}
    first = httpx.post(f"{memory_server.url}/v1/memories", headers={**ACME, **key}, json=body, timeout=60)
    assert first.status_code == 201
    _as_if_the_process_died_after_committing(server_settings, "add-crash-1")
    retry = httpx.post(f"{memory_server.url}/v1/memories", headers={**ACME, **key}, json=body, timeout=60)
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()  # rebuilt from the stored turns
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/alice")) == len(TURNS)

    headers = {**ACME, "Content-Type": "application/x-ndjson", "Idempotency-Key": "import-crash-1"}
    first = httpx.post(f"{memory_server.url}/v1/users/bob/import", content=EXPORT.encode(), headers=headers, timeout=60)
    assert first.status_code == 201
    _as_if_the_process_died_after_committing(server_settings, "import-crash-1")
    retry = httpx.post(f"{memory_server.url}/v1/users/bob/import", content=EXPORT.encode(), headers=headers, timeout=60)
    assert retry.status_code == 201 and retry.json() == first.json()
    with MemoryStore(server_settings.database_url) as store:
        assert len(store.list_turns("acme/bob")) == 1


def test_a_write_and_its_outcome_commit_together(tmp_path):
    """The `also` hook runs inside the write's transaction: when it fails, the turns are not stored either."""
    with MemoryStore(f"sqlite:///{tmp_path / 'm.db'}") as store:
        def fail(conn, ids):
            assert len(ids) == 1
            raise RuntimeError("the outcome could not be recorded")

        from memstream.memory import NewTurn

        with pytest.raises(RuntimeError, match="could not be recorded"):
            store.add_turns("alice", "c", [NewTurn("user", "never stored")], also=fail)
        assert not store.has_user("alice") or store.list_turns("alice") == []
        seen = []
        store.add_turns("alice", "c", [NewTurn("user", "stored")], also=lambda conn, ids: seen.append(ids))
        assert [t.id for t in store.list_turns("alice")] == seen[0]


def test_processes_opening_a_fresh_database_together_create_the_table_once(db_url):
    # Found starting two `memstream serve` on a fresh PostgreSQL: one died at startup with "duplicate key value
    # violates unique constraint pg_type_typname_nsp_index" (both ran CREATE TABLE server_idempotency).
    import threading

    from memstream.server.idempotency import IdempotencyKeys

    stores = [MemoryStore(db_url) for _ in range(6)]  # one engine each, as separate processes have
    engines = [store.engine for store in stores]
    start, errors = threading.Barrier(len(engines)), []

    def open_keys(engine):
        start.wait()
        try:
            IdempotencyKeys(engine, stale_after_s=60)
        except Exception as exc:  # noqa: BLE001 - the test reports whichever error a racing opener gets
            errors.append(repr(exc))

    threads = [threading.Thread(target=open_keys, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
