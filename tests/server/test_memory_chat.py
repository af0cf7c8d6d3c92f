"""Memory-augmented chat through the real openai client against a real server on 127.0.0.1."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from memstream.backends.scripted import ScriptedBackend
from tests.server.conftest import KEY_ACME, answer_from_memory, rows_of

FACT = "I live in Lisbon, next to the old tram depot."
QUESTION = [{"role": "user", "content": "Where do I live?"}]


def client_for(server, key: str = KEY_ACME) -> openai.OpenAI:
    # Only base_url, api_key and user are needed; the conversation header is optional.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def streamed(client: openai.OpenAI, user: str, conversation: str):
    chunks = list(client.chat.completions.create(model="memstream/scripted", messages=QUESTION, user=user, stream=True,
                                                 extra_headers={"X-Memstream-Conversation": conversation}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1]


def test_a_fact_told_by_alice_is_used_later_and_bob_never_sees_it(memory_server, server_settings):
    client = client_for(memory_server)
    told = client.chat.completions.create(model="memstream/scripted", messages=[{"role": "user", "content": FACT}], user="alice")
    assert told.model_extra["memstream"]["user"] == "alice"

    # A later request, new conversation, non-streaming: the fact reached the prompt and the answer.
    raw = client.chat.completions.with_raw_response.create(model="memstream/scripted", messages=QUESTION, user="alice",
                                                           extra_headers={"X-Memstream-Conversation": "next-day"})
    answer = raw.parse()
    assert "Lisbon" in answer.choices[0].message.content
    info = answer.model_extra["memstream"]
    fact_id = info["user_turn_id"] - 2  # the turn pair told first: user fact, then the reply
    assert info["conversation"] == "next-day"
    assert fact_id in [m["id"] for m in info["memories"]]
    assert any("Lisbon" in m["text"] and m["score"] > 0 and m["time"] for m in info["memories"])
    assert str(fact_id) in raw.headers["X-Memstream-Memories"].split(",")

    # Streaming, the same: pieces, then a final chunk carrying the memories used.
    text, last = streamed(client, "alice", "third")
    assert "Lisbon" in text
    assert last.choices[0].finish_reason == "stop"
    assert fact_id in [m["id"] for m in last.model_extra["memstream"]["memories"]]

    # Bob asks the same, both ways: nothing of Alice's reaches him.
    for bob_text, bob_info in [
        (lambda r: (r.choices[0].message.content, r.model_extra["memstream"]))(
            client.chat.completions.create(model="memstream/scripted", messages=QUESTION, user="bob")),
        (lambda t: (t[0], t[1].model_extra["memstream"]))(streamed(client, "bob", "default")),
    ]:
        assert "Lisbon" not in bob_text
        assert all("Lisbon" not in m["text"] for m in bob_info["memories"])

    # Every turn pair was remembered, under the tenant's namespace, never under the bare name.
    with rows_of(server_settings) as rows:
        assert rows.users() == ["acme/alice", "acme/bob"]
        alice = rows.list_turns("acme/alice")
        assert [t.role for t in alice] == ["user", "assistant"] * 3
        assert alice[0].text == FACT and alice[2].conversation_id == "next-day"
        assert rows.count_turns("acme/bob") == 4


def test_memory_switched_on_by_header_and_user_header(memory_server):
    headers = {"Authorization": f"Bearer {KEY_ACME}", "X-Memstream-Memory": "on", "X-Memstream-User": "carol"}
    body = {"model": "scripted", "messages": [{"role": "user", "content": "My cat is called Miso."}]}
    first = httpx.post(f"{memory_server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert first.status_code == 200 and first.json()["memstream"]["user"] == "carol"
    body["messages"] = [{"role": "user", "content": "What is my cat called?"}]
    again = httpx.post(f"{memory_server.url}/v1/chat/completions", json=body,
                       headers={**headers, "X-Memstream-Conversation": "other"}, timeout=60).json()
    assert "Miso" in again["choices"][0]["message"]["content"]
    # Without the switch the same request is plain chat: no memory field, nothing stored.
    plain = httpx.post(f"{memory_server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY_ACME}"}, timeout=60)
    assert plain.status_code == 200 and "memstream" not in plain.json()
    assert "Miso" not in plain.json()["choices"][0]["message"]["content"]

    models = [m.id for m in client_for(memory_server).models.list()]
    assert models == ["scripted", "memstream/scripted"]


@pytest.mark.parametrize("problem, body, headers, status, code", [
    ("no user", {"model": "memstream/scripted", "messages": QUESTION}, {}, 400, "missing_user"),
    ("last message not the user's", {"model": "memstream/scripted", "user": "dan",
                                     "messages": [*QUESTION, {"role": "assistant", "content": "hm"}]}, {}, 400, "invalid_value"),
    ("bad switch", {"model": "scripted", "user": "dan", "messages": QUESTION}, {"X-Memstream-Memory": "maybe"}, 400, "invalid_value"),
    ("unknown model", {"model": "memstream/gpt-9", "user": "dan", "messages": QUESTION}, {}, 404, "model_not_found"),
])
def test_bad_memory_chat_requests_are_4xx_and_store_nothing(memory_server, server_settings, problem, body, headers, status, code):
    response = httpx.post(f"{memory_server.url}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY_ACME}", **headers}, timeout=60)
    assert response.status_code == status, problem
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    with rows_of(server_settings) as rows:
        assert rows.count_turns() == 0


def test_backend_failure_is_a_502_and_the_user_turn_is_kept(start_server, server_settings):
    server = start_server(server_settings, ScriptedBackend(["never finished"], fail_after=0))
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(server).chat.completions.create(model="memstream/scripted", messages=[{"role": "user", "content": FACT}], user="erin")
    assert failed.value.status_code == 502 and "saved" in failed.value.message
    with rows_of(server_settings) as rows:
        assert [t.text for t in rows.list_turns("acme/erin")] == [FACT]


def test_shutdown_finishes_the_request_in_flight_and_keeps_its_turns(start_server, server_settings):
    started, release = threading.Event(), threading.Event()

    def slow(messages):
        started.set()
        assert release.wait(30), "the test never released the backend"
        return answer_from_memory(messages)

    server = start_server(server_settings, ScriptedBackend(respond=slow))
    result = {}
    ask = threading.Thread(target=lambda: result.update(reply=client_for(server).chat.completions.create(
        model="memstream/scripted", messages=[{"role": "user", "content": FACT}], user="frank")))
    ask.start()
    assert started.wait(30)
    server.server.should_exit = True  # what SIGTERM does: stop accepting, finish what is in flight
    release.set()
    ask.join(30)
    server.stop()
    assert result["reply"].choices[0].message.content
    with rows_of(server_settings) as rows:
        assert [t.role for t in rows.list_turns("acme/frank")] == ["user", "assistant"]
