"""`memstream serve` with the local model in its own process (server.model_process, the default): the model
runs in a child of the server; a child that dies fails the request it was serving with 502, and the next request
is answered by a new child. The server's own stop takes the child with it."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx

from memstream.server.process import ServerProcess, server_env

KEY = "test-key-model-process"
CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}


def model_children(server_pid: int) -> list[int]:
    # Each thread lists the children it started: a restarted model is a request thread's.
    children = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return [int(pid) for pid in children if b"memstream.backends.process" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_dead_model_process_fails_its_request_and_the_next_one_gets_a_new_one(tmp_path, isolated_home):
    # The test's data dir: its weights/ is the run's converted-weights cache (tests/conftest.py).
    env = server_env(f"sqlite:///{tmp_path / 'm.db'}", isolated_home, {KEY: "tests"}, backend="local",
                     MEMSTREAM_SERVER__MEMORY="false")
    with ServerProcess(env) as server, httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"},
                                                    timeout=300) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        [child] = model_children(server.proc.pid)

        answer: dict = {}
        long_chat = {**CHAT, "messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 2000}
        thread = threading.Thread(target=lambda: answer.update(response=http.post("/v1/chat/completions", json=long_chat)))
        thread.start()
        thread.join(3)  # generating by now
        os.kill(child, signal.SIGKILL)
        thread.join(60)
        response = answer["response"]
        assert response.status_code == 502
        assert "model process exited" in response.json()["error"]["message"]

        again = http.post("/v1/chat/completions", json=CHAT)
        assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"]
        [new_child] = model_children(server.proc.pid)
        assert new_child != child
    assert not Path(f"/proc/{new_child}").exists() or b"zombie" in Path(f"/proc/{new_child}/status").read_bytes().lower()
