"""Two `memstream serve` processes on one PostgreSQL database: what one writes, the other finds;
what one forgets, both forget. With pgvector (the default on PostgreSQL) the index is in the database and the
other process finds a turn on its next request; with retrieval.index_backend = 'memory' each process keeps its
own index, caught up from the database within the refresh interval."""

from __future__ import annotations

import time

import httpx
import pytest

from memstream.memory.index_files import claim_cache_dir
from memstream.server.process import ServerProcess, server_env
from tests.conftest import PG_URL, reset_postgres

KEY = "scale-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
REFRESH_S = 0.5  # the stated bound: a process's background refresh runs this often


def search(server, user, query, k=5):
    return httpx.post(f"{server.url}/v1/memories/search", json={"user": user, "query": query, "k": k}, headers=AUTH, timeout=60)


def test_only_one_process_may_own_an_index_cache(tmp_path):
    first, lock = claim_cache_dir(tmp_path / "index")
    assert first == tmp_path / "index"
    assert claim_cache_dir(tmp_path / "index") == (None, None)  # a second owner would corrupt the files
    lock.close()
    second, lock = claim_cache_dir(tmp_path / "index")
    assert second == tmp_path / "index"
    lock.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="MEMSTREAM_TEST_PG_URL not set (CI starts a PostgreSQL server)")
@pytest.mark.parametrize("index_backend", ["database", "memory"])
def test_two_processes_share_one_postgres_store(tmp_path, index_backend):
    reset_postgres(PG_URL)
    # Same data dir on purpose: only one of them may own the on-disk index cache.
    env = server_env(PG_URL, tmp_path / "home", {KEY: "team"}, index_refresh_s=REFRESH_S, MEMSTREAM_AGENT__ENRICH="false",
                     MEMSTREAM_RETRIEVAL__INDEX_BACKEND=index_backend)
    a, b = ServerProcess(env).launch(), ServerProcess(env).launch()
    try:
        a.wait_ready(), b.wait_ready()
        turns = [{"role": "user", "text": "My sister Ines is a marine biologist in Faro."}]
        added = httpx.post(f"{a.url}/v1/memories", json={"user": "alice", "turns": turns}, headers=AUTH, timeout=60)
        fact_id = added.json()["data"][0]["id"]
        if index_backend == "database":
            # The index is in the database: B's very next request finds it, with no refresh in between.
            assert [h["id"] for h in search(b, "alice", "what does my sister do?").json()["data"]] == [fact_id]
            assert httpx.get(f"{b.url}/ready").json()["index"]["in_database"] is True

        # B's background refresh alone catches up within the stated delay (no request to B in between) ...
        deadline = time.monotonic() + 2 * REFRESH_S + 5  # refresh interval, plus slack for a loaded machine
        while httpx.get(f"{b.url}/ready").json()["index"]["turns_behind"] > 0:
            assert time.monotonic() < deadline, "B's index did not catch up within the refresh interval"
            time.sleep(0.1)
        # ... and a search through B finds the turn written through A.
        assert [h["id"] for h in search(b, "alice", "what does my sister do?").json()["data"]] == [fact_id]

        # Memory chat through B, in another conversation (so it comes from the archive, not the recent turns), uses it too.
        chat = httpx.post(f"{b.url}/v1/chat/completions", json={"model": "memstream/scripted", "user": "alice",
                                                                "messages": [{"role": "user", "content": "What does my sister do?"}]},
                          headers={**AUTH, "X-Memstream-Conversation": "later"}, timeout=60).json()
        assert fact_id in [m["id"] for m in chat["memstream"]["memories"]]

        # Delete one memory through B: A stops returning it.
        assert httpx.delete(f"{b.url}/v1/memories/{fact_id}", params={"user": "alice"}, headers=AUTH).status_code == 200
        assert fact_id not in [h["id"] for h in search(a, "alice", "sister marine biologist").json()["data"]]

        # Forget through A: both processes honour it.
        assert httpx.delete(f"{a.url}/v1/users/alice", headers=AUTH).status_code == 200
        for server in (a, b):
            gone = search(server, "alice", "sister")
            assert gone.status_code == 404 and "unknown user 'alice'" in gone.json()["error"]["message"]
        for server in (a, b):
            assert httpx.get(f"{server.url}/ready").status_code == 200
    finally:
        a.stop(), b.stop()
    for server in (a, b):  # SIGTERM: the graceful path ran to its end
        assert "Application shutdown complete" in server.final_output, server.final_output[-2000:]
