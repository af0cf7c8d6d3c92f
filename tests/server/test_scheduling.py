"""Chats under load on a real server (127.0.0.1): a cancelled generation frees the model, deadlines end a
request with 504 and keep its turn, past the queue cap the answer is 429/503 at once, memory work never
waits behind another request's generation, and a remote-like backend serves chats concurrently."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import httpx
import pytest

from memstream.backends.base import Message
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.indexer import on_indexer_thread
from memstream.memory.store import MemoryStore
from memstream.server.queue import FairQueue, RunCancelled
from tests.server.conftest import KEY_ACME, KEY_GLOBEX, wait_until_embedded

ACME = {"Authorization": f"Bearer {KEY_ACME}"}
GLOBEX = {"Authorization": f"Bearer {KEY_GLOBEX}"}


class SlowBackend(ScriptedBackend):
    """One word per `piece_s`, as many words as max_tokens allows; records what it generated and its overlap.

    `gate`: when set, every generation waits for it before its first word (a generation that is "running").
    """

    def __init__(self, piece_s: float = 0.01, concurrent: bool = False, gate: threading.Event | None = None):
        super().__init__(respond=lambda m: " ".join(["word"] * 4096))
        self.piece_s = piece_s
        self.concurrent = concurrent
        self.gate = gate
        self.generated: list[int] = []  # words produced per generation, in finishing order
        self.active = 0
        self.peak = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def stream(self, messages: Sequence[Message], **opts):
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.started.set()
        count = 0
        try:
            if self.gate is not None:
                self.gate.wait(30)
            for piece in super().stream(messages, **opts):
                time.sleep(self.piece_s)
                count += 1
                yield piece
        finally:
            with self._lock:
                self.active -= 1
                self.generated.append(count)


def chat(url: str, content: str = "hello", *, memory: bool = False, user: str = "alice", max_tokens: int = 8,
         headers=ACME, timeout: float = 60, stream: bool = False) -> httpx.Response:
    body = {"model": "memstream/scripted" if memory else "scripted", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": content}]}
    if memory:
        body["user"] = user
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def settings_with(server_settings, **server):
    return server_settings.model_copy(update={"server": server_settings.server.model_copy(update=server)})


def test_fair_queue_serves_keys_in_turn():
    queue = FairQueue(poll_s=0.01)
    queue.acquire("a")  # the slot is taken; everyone else waits
    order: list[str] = []
    threads = []
    for name in ["a1", "a2", "a3", "b1", "b2"]:
        thread = threading.Thread(target=lambda n=name: (queue.acquire(n[0]), order.append(n), queue.release()))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # arrival order: a1 a2 a3 b1 b2
    queue.release()
    for thread in threads:
        thread.join(5)
    assert order == ["a1", "b1", "a2", "b2", "a3"]  # round-robin between keys, FIFO within one


def test_fair_queue_wait_gives_up_on_cancel():
    queue = FairQueue(poll_s=0.01)
    queue.acquire("a")
    cancel = threading.Event()
    outcome = []

    def waiter():
        try:
            queue.acquire("b", cancel)
            outcome.append("granted")
        except RunCancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    cancel.set()
    thread.join(5)
    assert outcome == ["cancelled"] and queue.waiting() == 0
    queue.release()
    queue.acquire("c", deadline=time.monotonic() + 1)  # the slot is free again: granted at once


def test_an_abandoned_non_streamed_chat_stops_and_frees_the_model(start_server, server_settings):
    # The finding: a plain chat with max_tokens 2048 whose client gave up kept generating, and the next
    # client's memory chat waited for all of it (155 s). Now the generation stops at the next word.
    backend = SlowBackend(piece_s=0.01)
    server = start_server(settings_with(server_settings, max_tokens_limit=2048), backend)
    with pytest.raises(httpx.ReadTimeout):
        chat(server.url, max_tokens=2048, timeout=1.0)  # 2048 words would take 20 s
    started = time.monotonic()
    answered = chat(server.url, "I like tea", memory=True, max_tokens=8)
    waited = time.monotonic() - started
    assert answered.status_code == 200, answered.text
    assert backend.generated[0] < 1000, "the abandoned generation ran on"
    assert waited < 15, f"the next memory chat waited {waited:.1f}s behind an abandoned generation"


def test_the_deadline_ends_a_chat_with_504_and_keeps_the_users_turn(start_server, server_settings):
    backend = SlowBackend(piece_s=0.1)
    server = start_server(settings_with(server_settings, request_timeout_s=2.5), backend)
    for stream in (False, True):
        response = chat(server.url, f"remember the violet door {stream}", memory=True, max_tokens=60, stream=stream)
        if stream and response.status_code == 200:  # past the first piece: the error comes in-band
            assert '"code": "timeout"' in response.text and response.text.rstrip().endswith("data: [DONE]")
        else:  # a loaded machine may not reach the first piece in time: then before the headers
            assert response.status_code == 504, response.text
            assert response.json()["error"]["code"] == "timeout" and "request_timeout_s" in response.json()["error"]["message"]
    time.sleep(0.5)
    assert max(backend.generated) < 60  # the generations were stopped, not left to run (120 pieces)
    with MemoryStore(server_settings.database_url) as store:
        texts = [t.text for t in store.list_turns("acme/alice")]
    assert "remember the violet door False" in texts and "remember the violet door True" in texts


def test_past_the_queue_cap_chats_get_503_or_429_at_once(start_server, server_settings):
    gate = threading.Event()
    backend = SlowBackend(piece_s=0.0, gate=gate)
    # One model slot, one waiting place; per key at most 2 in flight.
    server = start_server(settings_with(server_settings, max_queue=1, max_queue_per_key=2), backend)
    results: dict[str, httpx.Response] = {}
    running = [threading.Thread(target=lambda k=k, h=h: results.__setitem__(k, chat(server.url, headers=h)))
               for k, h in (("first", ACME), ("second", GLOBEX))]
    for thread in running:
        thread.start()
        time.sleep(0.2)
    assert backend.started.wait(5)
    started = time.monotonic()
    full = chat(server.url, headers=ACME)
    assert time.monotonic() - started < 2, "a refused request must be answered at once"
    assert full.status_code == 503 and full.json()["error"]["code"] == "server_overloaded"
    assert int(full.headers["Retry-After"]) >= 1
    gate.set()
    for thread in running:
        thread.join(30)
    assert results["first"].status_code == results["second"].status_code == 200

    # Per key: acme may have 2 chats in flight; its third is refused with 429 while globex still gets in.
    gate.clear()
    server2 = start_server(settings_with(server_settings, max_queue=10, max_queue_per_key=2), SlowBackend(gate=gate))
    held = [threading.Thread(target=chat, args=(server2.url,)) for _ in range(2)]
    for thread in held:
        thread.start()
    time.sleep(0.5)
    third = chat(server2.url, headers=ACME)
    assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limit_error"
    assert int(third.headers["Retry-After"]) >= 1
    other = threading.Thread(target=lambda: results.__setitem__("globex", chat(server2.url, headers=GLOBEX)))
    other.start()
    gate.set()
    for thread in [*held, other]:
        thread.join(30)
    assert results["globex"].status_code == 200


def test_rate_limit_per_key(start_server, server_settings):
    server = start_server(settings_with(server_settings, rate_limit_per_minute=3))
    codes = [httpx.get(f"{server.url}/v1/models", headers=ACME).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = httpx.get(f"{server.url}/v1/models", headers=ACME)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and int(limited.headers["Retry-After"]) >= 1
    assert httpx.get(f"{server.url}/v1/models", headers=GLOBEX).status_code == 200  # another key has its own budget
    assert httpx.get(f"{server.url}/health").status_code == 200  # outside /v1: never limited


def at_once(count: int, call) -> list:
    """call(0) ... call(count - 1), each on a thread of its own, all started before any is waited for; their results."""
    results: list = [None] * count
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, call(i))) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_memory_work_does_not_wait_behind_another_generation(start_server, server_settings):
    # While one chat holds the (local-like, one-at-a-time) model, another user's memory chat stores its
    # turn and retrieves, and searches answer; only its generation waits.
    gate = threading.Event()
    backend = SlowBackend(gate=gate)
    server = start_server(server_settings, backend)
    assert httpx.post(f"{server.url}/v1/memories", headers=GLOBEX, timeout=60,
                      json={"user": "bob", "turns": [{"role": "user", "text": "My cat is called Miso."}]}).status_code == 201
    holder = threading.Thread(target=chat, args=(server.url,), kwargs={"headers": ACME})
    holder.start()
    assert backend.started.wait(5)
    waiting = threading.Thread(target=chat, args=(server.url, "What is my cat called?"),
                               kwargs={"memory": True, "user": "bob", "headers": GLOBEX})
    waiting.start()
    deadline = time.monotonic() + 20
    texts: list[str] = []
    while time.monotonic() < deadline and "What is my cat called?" not in texts:
        time.sleep(0.1)
        with MemoryStore(server_settings.database_url) as store:
            texts = [t.text for t in store.list_turns("globex/bob")]
    assert "What is my cat called?" in texts, "the memory chat's store step waited behind the other generation"
    found = httpx.post(f"{server.url}/v1/memories/search", json={"user": "bob", "query": "cat"}, headers=GLOBEX, timeout=20)
    assert found.status_code == 200 and found.json()["data"]
    assert backend.active == 1  # still only one generation at a time
    gate.set()
    holder.join(30)
    waiting.join(30)
    assert backend.peak == 1


def test_a_concurrent_backend_serves_memory_chats_at_once(start_server, server_settings):
    backend = SlowBackend(piece_s=0.05, concurrent=True)  # a remote endpoint: many requests in flight
    server = start_server(server_settings, backend)
    replies = at_once(6, lambda i: chat(server.url, f"note {i}", memory=True, user=f"u{i}").status_code)
    assert replies == [200] * 6
    assert backend.peak >= 3, f"memory chats ran {backend.peak} at a time"


def test_searches_past_search_threads_wait_on_the_event_loop(start_server, server_settings, monkeypatch):
    # More threads than cores only share the GIL: at most server.search_threads searches run at once, the rest wait
    # for one to finish, and every one is answered.
    from memstream.memory.core import Memory

    settings = server_settings.model_copy(update={"server": server_settings.server.model_copy(update={"search_threads": 2})})
    server = start_server(settings)
    assert httpx.post(f"{server.url}/v1/memories", headers=ACME, timeout=60,
                      json={"user": "ann", "turns": [{"role": "user", "text": "I play the cello."}]}).status_code == 201
    running, peak, lock = [0], [0], threading.Lock()
    search = Memory.search

    def slow_search(self, *args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)
            return search(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Memory, "search", slow_search)
    codes = at_once(6, lambda i: httpx.post(f"{server.url}/v1/memories/search", json={"user": "ann", "query": "cello"},
                                            headers=ACME, timeout=60).status_code)
    assert codes == [200] * 6
    assert peak[0] == 2, f"{peak[0]} searches ran at once"
    unknown = httpx.post(f"{server.url}/v1/memories/search", json={"user": "nobody", "query": "cello"}, headers=ACME, timeout=20)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "user_not_found"


def test_writes_past_the_index_backlog_bound_get_503_and_store_nothing(start_server, server_settings, monkeypatch):
    settings = server_settings.model_copy(update={"retrieval": server_settings.retrieval.model_copy(
        update={"max_pending_keys": 3, "pending_wait_s": 0.0})})
    server = start_server(settings)
    embedder = server.server.config.app.state.memory.memory.retriever.embedder
    gate, embed = threading.Event(), embedder.embed

    def held(texts):  # the background indexer stalls (a slow embedder under load); queries still embed
        if on_indexer_thread():
            gate.wait(30)
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", held)
    add = {"user": "alice", "turns": [{"role": "user", "text": "I moved to Lisbon in May."}]}
    try:
        assert httpx.post(f"{server.url}/v1/memories", json=add, headers=ACME, timeout=30).status_code == 201
        refused = httpx.post(f"{server.url}/v1/memories", json=add, headers=ACME, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "memory_busy"
        assert "max_pending_keys 3" in refused.json()["error"]["message"] and int(refused.headers["Retry-After"]) >= 1
        keyed = {**ACME, "Idempotency-Key": "add-once"}
        assert httpx.post(f"{server.url}/v1/memories", json=add, headers=keyed, timeout=30).status_code == 503
        busy_chat = chat(server.url, "Where do I live?", memory=True)
        assert busy_chat.status_code == 503 and busy_chat.json()["error"]["code"] == "memory_busy"
        listed = httpx.get(f"{server.url}/v1/memories", params={"user": "alice"}, headers=ACME, timeout=30).json()
        assert [m["text"] for m in listed["data"]] == ["I moved to Lisbon in May."]  # the refused writes stored nothing
    finally:
        gate.set()
    wait_until_embedded(server)
    retried = httpx.post(f"{server.url}/v1/memories", json=add, headers=keyed, timeout=30)
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers  # the refusal kept no claim
    assert chat(server.url, "Where do I live?", memory=True).status_code == 200


def test_the_load_driver_counts_the_indexing_a_level_leaves_behind(start_server, server_settings, monkeypatch):
    from benchmarks.load_driver import run_load

    server = start_server(server_settings)
    embedder = server.server.config.app.state.memory.memory.retriever.embedder
    embed = embedder.embed

    def slow(texts):  # an indexer that falls behind the writes
        if on_indexer_thread():
            time.sleep(0.3)
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", slow)
    result = run_load([server.url], KEY_ACME, clients=2, seconds=2.0, stream=False, search_every=0, users=2, seed=False,
                      drain_s=60.0)
    assert result["errors"] == 0 and result["chat"]["requests"] > 0
    assert result["index_backlog_keys"] > 0 and result["drain_s"] > 0
    assert result["chat"]["sustained_rps"] < result["chat"]["rps"]
    assert httpx.get(f"{server.url}/ready", timeout=30).json()["index"]["pending_keys"] == 0
