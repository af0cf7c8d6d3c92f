"""Memory REST routes over real HTTP, with the store checked after each write; bad input changes nothing."""

from __future__ import annotations

import json

import httpx

from tests.server.conftest import BODY_LIMIT, KEY_ACME, KEY_GLOBEX, rows_of, wait_until_embedded

ACME = {"Authorization": f"Bearer {KEY_ACME}"}
GLOBEX = {"Authorization": f"Bearer {KEY_GLOBEX}"}
TURNS = [
    {"role": "user", "text": "I adopted a greyhound called Pepper.", "time": "2023-05-02T10:00:00"},
    {"role": "assistant", "text": "Congratulations on Pepper!", "time": "2023-05-02T10:00:05"},
    {"role": "user", "text": "We moved to a flat in Porto last week.", "time": "2023-07-20T09:00:00"},
    {"role": "user", "text": "I started learning the cello.", "time": "2023-09-01T18:30:00", "speaker": "Alice"},
]


def snapshot(settings) -> tuple:
    with rows_of(settings) as rows:
        return tuple((user, tuple((t.id, t.text) for t in rows.list_turns(user))) for user in rows.users())


def add(server, user="alice", turns=TURNS, headers=ACME, conversation="history"):
    return httpx.post(f"{server.url}/v1/memories", json={"user": user, "conversation": conversation, "turns": turns},
                      headers=headers, timeout=60)


def test_every_memory_route_over_http(memory_server, server_settings):
    url = memory_server.url
    added = add(memory_server)
    assert added.status_code == 201, added.text
    ids = [m["id"] for m in added.json()["data"]]
    assert added.json()["data"][3]["speaker"] == "Alice" and added.json()["data"][0]["user"] == "alice"
    with rows_of(server_settings) as rows:
        stored = rows.list_turns("acme/alice")
        assert [t.id for t in stored] == ids and stored[2].text == TURNS[2]["text"]
        assert stored[0].event_time.isoformat() == "2023-05-02T10:00:00"

    # list, paginated
    page1 = httpx.get(f"{url}/v1/memories", params={"user": "alice", "limit": 3}, headers=ACME).json()
    page2 = httpx.get(f"{url}/v1/memories", params={"user": "alice", "limit": 3, "offset": page1["next_offset"]}, headers=ACME).json()
    assert [m["id"] for m in page1["data"] + page2["data"]] == ids
    assert page1["has_more"] and not page2["has_more"] and page2["next_offset"] is None

    # search: text, time, score, source; a time window filters (once embedded, by meaning as well as by keyword)
    wait_until_embedded(memory_server)
    found = httpx.post(f"{url}/v1/memories/search", json={"user": "alice", "query": "what is my dog called?", "k": 2}, headers=ACME).json()
    best = found["data"][0]
    assert best["text"] == TURNS[0]["text"] and best["time"].startswith("2023-05-02")
    assert best["score"] > 0 and best["source"] in ("turn", "round", "statement", "fact") and len(found["data"]) == 2
    windowed = httpx.post(f"{url}/v1/memories/search", json={"user": "alice", "query": "what is my dog called?", "k": 5,
                                                             "since": "2023-07-01T00:00:00", "until": "2023-08-01T00:00:00"}, headers=ACME).json()
    assert [m["id"] for m in windowed["data"]] == [ids[2]]
    relative = httpx.post(f"{url}/v1/memories/search", json={"user": "alice", "query": "where did I move last week?",
                                                             "at": "2023-07-26T12:00:00"}, headers=ACME).json()
    assert relative["time_window"]["start"].startswith("2023-07-1") and relative["data"][0]["id"] == ids[2]

    # delete one memory: gone from the store and from search
    deleted = httpx.delete(f"{url}/v1/memories/{ids[0]}", params={"user": "alice"}, headers=ACME)
    assert deleted.json() == {"id": ids[0], "deleted": True}
    with rows_of(server_settings) as rows:
        assert rows.get_turn("acme/alice", ids[0]) is None and rows.count_turns("acme/alice") == 3
    again = httpx.post(f"{url}/v1/memories/search", json={"user": "alice", "query": "greyhound Pepper", "k": 5}, headers=ACME).json()
    assert ids[0] not in [m["id"] for m in again["data"]]

    # export (JSONL stream) -> import into another user: the same memories, searchable
    with httpx.stream("GET", f"{url}/v1/users/alice/export", headers=ACME) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [line for line in response.iter_lines() if line]
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records if r["type"] == "turn"] == [t["text"] for t in TURNS[1:]]
    assert "acme" not in "".join(lines)  # the tenant prefix never leaves the server
    imported = httpx.post(f"{url}/v1/users/alice-copy/import", content="\n".join(lines), headers=ACME)
    assert imported.status_code == 201 and imported.json()["turns"] == 3
    with rows_of(server_settings) as rows:
        assert [t.text for t in rows.list_turns("acme/alice-copy")] == [t["text"] for t in TURNS[1:]]
    copy = httpx.post(f"{url}/v1/memories/search", json={"user": "alice-copy", "query": "cello", "k": 1}, headers=ACME).json()
    assert copy["data"][0]["text"] == TURNS[3]["text"]

    # forget: every row of the user is gone; the user is then unknown
    forgotten = httpx.delete(f"{url}/v1/users/alice", headers=ACME).json()
    assert forgotten == {"user": "alice", "turns": 3, "facts": 0, "sessions": 1}
    with rows_of(server_settings) as rows:
        assert not rows.has_user("acme/alice") and rows.has_user("acme/alice-copy")
    assert httpx.post(f"{url}/v1/memories/search", json={"user": "alice", "query": "cello"}, headers=ACME).status_code == 404


def test_health_ready_and_openapi_document_every_route(memory_server):
    assert httpx.get(f"{memory_server.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{memory_server.url}/ready").json()
    assert ready["status"] == "ready" and ready["database"] == "ok" and ready["index"]["error"] is None
    schema = httpx.get(f"{memory_server.url}/openapi.json").json()
    routes = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert {("/v1/memories", "post"), ("/v1/memories", "get"), ("/v1/memories/search", "post"),
            ("/v1/memories/{memory_id}", "delete"), ("/v1/users/{user}", "delete"), ("/v1/users/{user}/export", "get"),
            ("/v1/users/{user}/import", "post"), ("/v1/chat/completions", "post"), ("/ready", "get")} <= routes
    for path, method in routes - {("/health", "get"), ("/ready", "get")}:
        assert "401" in schema["paths"][path][method]["responses"], (path, method)
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]["k"]
    assert (search["minimum"], search["maximum"]) == (1, 100)
    assert "max_body_bytes" in schema["info"]["description"]
    assert httpx.get(f"{memory_server.url}/docs").status_code == 200


BAD = [
    # (name, method, path, kwargs, status, what the message must name)
    ("unknown user: list", "GET", "/v1/memories", {"params": {"user": "zoe"}}, 404, "unknown user 'zoe'"),
    ("unknown user: search", "POST", "/v1/memories/search", {"json": {"user": "zoe", "query": "dog"}}, 404, "unknown user 'zoe'"),
    ("unknown user: export", "GET", "/v1/users/zoe/export", {}, 404, "unknown user 'zoe'"),
    ("unknown user: forget", "DELETE", "/v1/users/zoe", {}, 404, "unknown user 'zoe'"),
    ("unknown memory", "DELETE", "/v1/memories/999999", {"params": {"user": "alice"}}, 404, "memory 999999 not found"),
    ("malformed json", "POST", "/v1/memories", {"content": b'{"user": "alice", "turns": [', "headers": {"Content-Type": "application/json"}},
     400, "not valid JSON"),
    ("missing field", "POST", "/v1/memories", {"json": {"user": "alice"}}, 400, "turns"),
    ("bad role", "POST", "/v1/memories", {"json": {"user": "alice", "turns": [{"role": "robot", "text": "x"}]}}, 400, "turns.0.role"),
    ("k too large", "POST", "/v1/memories/search", {"json": {"user": "alice", "query": "dog", "k": 101}}, 400, "k"),
    ("k zero", "POST", "/v1/memories/search", {"json": {"user": "alice", "query": "dog", "k": 0}}, 400, "k"),
    ("empty window", "POST", "/v1/memories/search", {"json": {"user": "alice", "query": "dog", "since": "2024-01-01T00:00:00",
                                                              "until": "2023-01-01T00:00:00"}}, 400, "since must be earlier"),
    ("page too large", "GET", "/v1/memories", {"params": {"user": "alice", "limit": 501}}, 400, "limit"),
    ("oversized body", "POST", "/v1/memories", {"json": {"user": "alice", "turns": [{"role": "user", "text": "x" * BODY_LIMIT}]}},
     413, "max_body_bytes"),
    ("oversized import", "POST", "/v1/users/alice/import", {"content": b"{}\n" * BODY_LIMIT}, 413, "max_body_bytes"),
    ("bad import line", "POST", "/v1/users/alice/import", {"content": b'{"type": "session", "id": 1, "conversation_id": "c"}\nnot json'},
     400, "line 2"),
    ("import record missing a field", "POST", "/v1/users/alice/import", {"content": b'{"type": "turn", "session": 7}'}, 400,
     "record 1 (turn): missing field 'conversation_id'"),
    ("import record of no session", "POST", "/v1/users/alice/import",
     {"content": b'{"type": "turn", "session": 7, "conversation_id": "c", "role": "user", "text": "x", "event_time": "2023-01-01T00:00:00"}'},
     400, "refers to session 7"),
    ("wrong key", "POST", "/v1/memories", {"json": {"user": "alice", "turns": TURNS}, "headers": {"Authorization": "Bearer nope"}},
     401, "invalid API key"),
    ("no key", "DELETE", "/v1/users/alice", {"headers": {"Authorization": ""}}, 401, "missing API key"),
    ("other tenant: list", "GET", "/v1/memories", {"params": {"user": "alice"}, "headers": GLOBEX}, 404, "unknown user 'alice'"),
    ("other tenant: search", "POST", "/v1/memories/search", {"json": {"user": "alice", "query": "dog"}, "headers": GLOBEX}, 404,
     "unknown user 'alice'"),
    ("other tenant: delete memory", "DELETE", "/v1/memories/1", {"params": {"user": "alice"}, "headers": GLOBEX}, 404, "unknown user"),
    ("other tenant: export", "GET", "/v1/users/alice/export", {"headers": GLOBEX}, 404, "unknown user 'alice'"),
    ("other tenant: forget", "DELETE", "/v1/users/alice", {"headers": GLOBEX}, 404, "unknown user 'alice'"),
]


def test_bad_input_gets_the_documented_4xx_and_changes_nothing(memory_server, server_settings):
    assert add(memory_server).status_code == 201
    before = snapshot(server_settings)
    for name, method, path, kwargs, status, says in BAD:
        headers = {**ACME, **kwargs.pop("headers", {})} if "headers" in kwargs else ACME
        if headers.get("Authorization") == "":
            headers = {}
        response = httpx.request(method, f"{memory_server.url}{path}", headers=headers, timeout=60, **kwargs)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert says in error["message"] or says == error["param"], (name, error)
        assert "acme" not in error["message"] and "globex" not in error["message"], name
    assert snapshot(server_settings) == before
    # The server kept serving, and the other tenant's 'alice' is a different user.
    assert add(memory_server, headers=GLOBEX).status_code == 201
    with rows_of(server_settings) as rows:
        assert rows.users() == ["acme/alice", "globex/alice"]
