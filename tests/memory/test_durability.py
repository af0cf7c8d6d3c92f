"""Crash and concurrency: a killed ingest loses nothing committed and leaves no half session;
concurrent writers all succeed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time


from memstream.memory.model import NewSession, NewTurn
from memstream.memory.store import MemoryStore

TURNS_PER_SESSION = 40

WRITER = textwrap.dedent(
    """
    import sys
    from memstream.memory.model import NewSession, NewTurn
    from memstream.memory.store import MemoryStore
    url, user, sessions, per_session = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = MemoryStore(url)
    for s in range(sessions):
        turns = [NewTurn("user", f"{user} session {s} turn {t} " + "x" * 200, metadata={"expected": per_session}) for t in range(per_session)]
        store.ingest_sessions(user, [NewSession(f"conv-{s % 3}", turns, external_id=str(s))])
        print(s, flush=True)
    print("done", flush=True)
    """
)


def _writer(url: str, user: str, sessions: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, user, str(sessions), str(TURNS_PER_SESSION)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _assert_whole_sessions(store: MemoryStore, user: str) -> int:
    sessions = store.sessions(user)
    for session in sessions:
        turns = store.list_turns(user, session_id=session.id)
        assert len(turns) == TURNS_PER_SESSION, f"session {session.external_id} is half-written"
        assert [t.position for t in turns] == list(range(TURNS_PER_SESSION))
    return len(sessions)


def test_sigkill_mid_ingest_keeps_every_committed_session(sqlite_url):
    MemoryStore(sqlite_url).close()  # create the schema before the race
    process = _writer(sqlite_url, "alice", 100_000)
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 40 and time.monotonic() < deadline:
        line = process.stdout.readline()
        committed = int(line) if line.strip().isdigit() else committed
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert committed >= 40

    store = MemoryStore(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    stored_sessions = _assert_whole_sessions(store, "alice")
    # Everything reported committed is there (the kill may land after one more commit).
    assert stored_sessions >= committed + 1
    external = sorted(int(s.external_id) for s in store.sessions("alice"))
    assert external == list(range(len(external)))


def test_two_processes_ingest_into_one_sqlite_file(sqlite_url):
    MemoryStore(sqlite_url).close()
    writers = [_writer(sqlite_url, user, 60) for user in ("p1", "p2")]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert all(w.returncode == 0 for w in writers), outputs
    store = MemoryStore(sqlite_url)
    assert _assert_whole_sessions(store, "p1") == 60
    assert _assert_whole_sessions(store, "p2") == 60
    assert store.count_turns() == 2 * 60 * TURNS_PER_SESSION


def test_threads_write_concurrently(db_url):
    store = MemoryStore(db_url)
    errors: list[BaseException] = []

    def work(user: str) -> None:
        try:
            for s in range(15):
                turns = [NewTurn("user", f"{user} {s} {t}") for t in range(TURNS_PER_SESSION)]
                store.ingest_sessions(user, [NewSession("c", turns)])
                store.add_turns(user, "live", [NewTurn("user", f"live {s}")])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i in range(4):
        user = f"t{i}"
        assert store.count_turns(user) == 15 * TURNS_PER_SESSION + 15
        live = store.list_turns(user, conversation_id="live")
        assert [t.position for t in live] == list(range(15))
