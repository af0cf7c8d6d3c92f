"""Every input that used to give a plain "Internal Server Error" now gets a 4xx in OpenAI's error shape, and
changes nothing; user ids with "/" work on every route; the user id limit is the documented one."""

from __future__ import annotations

import json

import httpx
import pytest

from memstream.server.tenancy import MAX_USER_CHARS
from tests.server.conftest import KEY_ACME
from tests.server.test_memory_rest import ACME, add, snapshot


def assert_client_error(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def nested(depth: int) -> str:
    return '{"type": "turn", "metadata": ' + "[" * depth + "]" * depth + "}"


EXPORT_HEAD = [
    {"type": "session", "id": 1, "conversation_id": "c", "started_at": "2023-05-01T10:00:00", "summary": None, "metadata": {}},
    {"type": "turn", "id": 1, "session": 1, "conversation_id": "c", "role": "user", "speaker": "user", "text": "hello",
     "event_time": "2023-05-01T10:00:00", "metadata": {}},
]


def lines(*records) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


BAD_IMPORTS = {
    "session id is a list": lines({**EXPORT_HEAD[0], "id": [1]}, EXPORT_HEAD[1]),
    "session id is an object": lines({**EXPORT_HEAD[0], "id": {"a": 1}}, EXPORT_HEAD[1]),
    "turn session is a list": lines(EXPORT_HEAD[0], {**EXPORT_HEAD[1], "session": [1]}),
    "turn session is an object": lines(EXPORT_HEAD[0], {**EXPORT_HEAD[1], "session": {"id": 1}}),
    "turn id is a list": lines(EXPORT_HEAD[0], {**EXPORT_HEAD[1], "id": [1, 2]}),
    "source_turn_ids is 5": lines(*EXPORT_HEAD, {"type": "fact", "subject": "s", "text": "t", "source_turn_ids": 5,
                                                 "valid_from": "2023-05-01T10:00:00"}),
    "nested 3,000 deep": lines(*EXPORT_HEAD, nested(3_000)),
    "nested 100,000 deep": lines(*EXPORT_HEAD, nested(100_000)),
    "nested 200 deep": lines(*EXPORT_HEAD, nested(200)),
}


def test_listed_inputs_are_4xx_and_change_nothing(start_server, server_settings):
    # Bodies up to 1 MB here, so the 100,000-deep lines reach the parser.
    server = start_server(server_settings.model_copy(update={"server": server_settings.server.model_copy(update={"max_body_bytes": 1_000_000})}))
    url = server.url
    assert add(server, user="u1").status_code == 201
    before = snapshot(server_settings)
    error = assert_client_error(httpx.get(f"{url}/v1/memories", params={"user": "u1", "offset": "10000000000000000000"}, headers=ACME))
    assert error["param"].endswith("offset")
    error = assert_client_error(httpx.delete(f"{url}/v1/memories/10000000000000000000", params={"user": "u1"}, headers=ACME))
    assert error["param"].endswith("memory_id")
    for field in ("since", "until", "at"):
        error = assert_client_error(httpx.post(f"{url}/v1/memories/search", headers=ACME,
                                               json={"user": "u1", "query": "dog", field: "0001-01-01T00:00:00"}))
        assert error["param"] == field and "1900-01-01" in error["message"]
    for name, body in BAD_IMPORTS.items():
        response = httpx.post(f"{url}/v1/users/u1/import", content=body.encode(), timeout=60,
                              headers={**ACME, "Content-Type": "application/x-ndjson"})
        assert response.status_code == 400, (name, response.text)
        assert_client_error(response)
    # A deeply nested JSON body on a JSON route: 400, not a RecursionError.
    deep = '{"user": "u1", "turns": [{"role": "user", "text": "x", "metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}]}"
    assert_client_error(httpx.post(f"{url}/v1/memories", content=deep, headers={**ACME, "Content-Type": "application/json"}))
    assert snapshot(server_settings) == before


def test_in_range_values_still_work(memory_server):
    url = memory_server.url
    add(memory_server, user="u1")
    assert httpx.get(f"{url}/v1/memories", params={"user": "u1", "offset": str(2**63 - 1)}, headers=ACME).json()["data"] == []
    missing = httpx.delete(f"{url}/v1/memories/{2**63 - 1}", params={"user": "u1"}, headers=ACME)
    assert assert_client_error(missing, 404)["code"] == "memory_not_found"
    found = httpx.post(f"{url}/v1/memories/search", headers=ACME,
                       json={"user": "u1", "query": "greyhound", "since": "1900-01-01T00:00:00", "until": "9999-12-30T00:00:00"})
    assert found.status_code == 200 and found.json()["data"]


@pytest.mark.parametrize("encoded", [False, True])
def test_a_user_id_with_a_slash_can_be_exported_imported_and_forgotten(memory_server, encoded):
    url = memory_server.url
    path = "org%2Falice" if encoded else "org/alice"
    assert add(memory_server, user="org/alice").status_code == 201
    listed = httpx.get(f"{url}/v1/memories", params={"user": "org/alice"}, headers=ACME).json()
    assert len(listed["data"]) == 4 and listed["data"][0]["user"] == "org/alice"
    exported = httpx.get(f"{url}/v1/users/{path}/export", headers=ACME)
    assert exported.status_code == 200 and exported.text.count('"type": "turn"') == 4
    imported = httpx.post(f"{url}/v1/users/{path.replace('alice', 'bob')}/import", content=exported.content,
                          headers={**ACME, "Content-Type": "application/x-ndjson"}, timeout=60)
    assert imported.status_code == 201 and imported.json() == {"user": "org/bob", "sessions": 1, "turns": 4, "facts": 0}
    for user in ("org/alice", "org/bob"):
        forgotten = httpx.delete(f"{url}/v1/users/{user.replace('/', '%2F') if encoded else user}", headers=ACME)
        assert forgotten.status_code == 200 and forgotten.json()["user"] == user and forgotten.json()["turns"] == 4
        assert assert_client_error(httpx.get(f"{url}/v1/users/{user}/export", headers=ACME), 404)["code"] == "user_not_found"


def test_the_documented_user_id_limit_is_the_real_one(memory_server):
    # With keys, the store id is "<tenant>/<user>": the client limit leaves room for any tenant name.
    longest = "u" * MAX_USER_CHARS
    assert add(memory_server, user=longest).status_code == 201
    assert httpx.get(f"{memory_server.url}/v1/users/{longest}/export", headers=ACME).status_code == 200
    assert httpx.delete(f"{memory_server.url}/v1/users/{longest}", headers=ACME).status_code == 200
    too_long = add(memory_server, user=longest + "u")
    assert assert_client_error(too_long)["param"] == "turns" or "user" in too_long.json()["error"]["param"]
    chat = httpx.post(f"{memory_server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY_ACME}"},
                      json={"model": "memstream/scripted", "user": longest + "u", "messages": [{"role": "user", "content": "hi"}]})
    assert assert_client_error(chat)["param"] == "user"
