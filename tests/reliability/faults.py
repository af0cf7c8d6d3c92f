"""Fault scenarios shared by tests/reliability/test_faults.py (asserts) and benchmarks/reliability.py
(records turns written vs turns found). Each scenario injects one fault against real components
and returns a plain dict of what it saw; the caller decides what must hold.

"Written" always means acknowledged: the process printed the count only after `Memory.ingest`,
`Memory.add` or `MemoryAgent.chat` returned (the durability point). Every scenario opens memory the
way the front ends do, with `open_memory` (rows only, `index=False`, where no index is involved).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from memstream.config import load_settings
from memstream.memory import Memory, open_memory
from memstream.memory.model import NewSession, NewTurn
from memstream.memory.store import MemoryStore, StoreError

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2023, 5, 8, 14, 0)
TOPICS = ["my dog Rex", "the Lisbon trip", "a new job at the observatory", "the charity 5K", "grandma's apple pie", "the piano recital"]


def topic_sessions(start: int, count: int, per_session: int = 6) -> list[NewSession]:
    """Sessions with distinct, searchable content (session i talks about TOPICS[i % 6])."""
    sessions = []
    for s in range(start, start + count):
        when = T0 + timedelta(days=s)
        turns = [
            NewTurn("user" if t % 2 == 0 else "assistant", f"Session {s} line {t}: we talked about {TOPICS[s % len(TOPICS)]} (item {s * 10 + t}).", None, when)
            for t in range(per_session)
        ]
        sessions.append(NewSession("history", turns, when, external_id=str(s)))
    return sessions


def _python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO_ROOT))


def _read_progress(process: subprocess.Popen, until: int, timeout_s: float) -> int:
    """Read the integer progress lines a child prints; return the last one once it reaches `until`."""
    last = -1
    deadline = time.monotonic() + timeout_s
    while last < until and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.strip().isdigit():
            last = int(line)
    return last


def _kill(process: subprocess.Popen, acknowledged: int) -> int:
    """SIGKILL the child; return the last progress it printed (lines still in the pipe count: they were acknowledged)."""
    os.kill(process.pid, signal.SIGKILL)
    rest = process.stdout.read()
    process.wait()
    printed = [int(line) for line in rest.split() if line.isdigit()]
    return max([acknowledged, *printed])


def integrity_ok(memory: Memory) -> bool:
    with memory.store.engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def rows_of(url: str) -> Memory:
    """The database at `url`, opened for its rows only (no model, no index)."""
    return open_memory(load_settings(db_url=url), index=False)


# -- SIGKILL during ingest ---------------------------------------------------------------------

INGESTER = """
import sys
from memstream.config import load_settings
from memstream.memory import open_memory
from tests.reliability.faults import topic_sessions
memory = open_memory(load_settings(db_url=sys.argv[1]), index=False)
for s in range(100000):
    memory.ingest("alice", topic_sessions(s, 1, per_session=int(sys.argv[2])))
    print(s + 1, flush=True)
"""


def kill_during_ingest(url: str, per_session: int = 30, after: int = 25) -> dict[str, Any]:
    rows_of(url).close()  # the schema exists before the child starts
    process = _python(INGESTER, url, str(per_session))
    acknowledged = _read_progress(process, after, 120)
    time.sleep(random.uniform(0, 0.02))  # land the kill anywhere in the next transaction
    acknowledged = _kill(process, acknowledged)
    with rows_of(url) as memory:
        sessions = memory.sessions("alice")
        whole = all(len(memory.list_turns("alice", session_id=s.id)) == per_session for s in sessions)
        return {
            "scenario": "SIGKILL during ingest",
            "turns_written": acknowledged * per_session,
            "turns_found": memory.count_turns("alice"),
            "whole_sessions": whole,
            "integrity_ok": integrity_ok(memory),
        }


# -- SIGKILL during an index rebuild -------------------------------------------------------------

INDEXER = """
import sys
from memstream.config import load_settings
from memstream.memory import open_memory
from tests.reliability.faults import topic_sessions
settings = load_settings(db_url=sys.argv[1], home=sys.argv[2])
memory = open_memory(settings, sync=False)
print(0, flush=True)
for s in range(100000):
    # A live process: commit a session (indexed by keyword at once, its vectors queued for the background
    # indexer), persist the index cache; the kill lands anywhere in here, vectors pending or mid-save.
    memory.ingest("alice", topic_sessions(100 + s, 1))
    memory.retriever.save()
    print(s + 1, flush=True)
"""

QUERIES = ["what about my dog Rex?", "the Lisbon trip", "charity 5K run", "apple pie recipe", "piano recital"]


def _hit_ids(memory: Memory, user: str) -> list[list[int]]:
    return [[h.turn.id for h in memory.search(user, q, k=8, now=T0 + timedelta(days=400)).hits] for q in QUERIES]


def kill_during_index_rebuild(tmp: Path, embedders, after: int = 2) -> dict[str, Any]:
    """A process ingesting and saving its index is killed; reopening catches up and matches a clean build."""
    url = f"sqlite:///{tmp / 'index.db'}"
    settings = load_settings(db_url=url, home=str(tmp))
    with rows_of(url) as memory:
        memory.ingest("alice", topic_sessions(0, 4))
    process = _python(INDEXER, url, str(tmp))
    acknowledged = _read_progress(process, after, 240)
    time.sleep(random.uniform(0, 0.3))
    acknowledged = _kill(process, acknowledged)
    # The reopened memory resumes from its saved cache and the database; the clean one builds from the database alone.
    with open_memory(settings, embedders=embedders) as reopened, open_memory(settings, embedders=embedders, cache_dir=None) as clean:
        reopened.flush()
        clean.flush()
        return {
            "scenario": "SIGKILL during index rebuild",
            "turns_written": 4 * 6 + acknowledged * 6,
            "turns_found": reopened.count_turns("alice"),
            "turns_indexed": reopened.stats("alice")["index"]["indexed_turns"],
            "search_matches_clean_build": _hit_ids(reopened, "alice") == _hit_ids(clean, "alice"),
            "integrity_ok": integrity_ok(reopened),
        }


# -- SIGKILL during background enrichment ----------------------------------------------------

CHATTER = """
import sys, itertools
from memstream.agent.controller import MemoryAgent
from memstream.backends.scripted import ScriptedBackend
from memstream.config import load_settings
from memstream.memory import open_memory
settings = load_settings(db_url=sys.argv[1], home=sys.argv[2])
agent = MemoryAgent(open_memory(settings), ScriptedBackend(respond=lambda m: "Noted."), settings, enrich=True, owns_memory=True)
facts = ["I live in Lisbon.", "I work at the observatory.", "My sister is named Clara.", "I adopted a cat named Pixel.", "My favorite food is ramen."]
print(0, flush=True)
for i in itertools.count():
    agent.chat(f"{facts[i % len(facts)]} Also, note number {i}.", user="alice")
    print(i + 1, flush=True)
"""


def kill_during_enrichment(tmp: Path, embedders, after: int = 4) -> dict[str, Any]:
    """An agent chatting with background enrichment on is killed; every acknowledged turn is there,
    facts point only at stored turns, and a new agent answers and enriches again."""
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend

    url = f"sqlite:///{tmp / 'enrich.db'}"
    rows_of(url).close()  # the schema exists before the child starts
    process = _python(CHATTER, url, str(tmp))
    acknowledged = _read_progress(process, after, 240)
    time.sleep(random.uniform(0, 0.2))
    acknowledged = _kill(process, acknowledged)
    settings = load_settings(db_url=url, home=str(tmp))
    with open_memory(settings, embedders=embedders) as memory:
        turn_ids = {t.id for t in memory.list_turns("alice", limit=100000)}
        facts = memory.get_facts("alice")
        dangling = [f.id for f in facts if not set(f.source_turn_ids) <= turn_ids]
        with MemoryAgent(memory, ScriptedBackend(respond=lambda m: "ok"), settings, enrich=True) as agent:
            reply = agent.chat("I moved to Porto.", user="alice")
            agent.enricher.drain()
        return {
            "scenario": "SIGKILL during background enrichment",
            "turns_written": acknowledged * 2,  # each acknowledged chat stored the user turn and the reply
            "turns_found": len(turn_ids),
            "facts_found": len(facts),
            "dangling_facts": len(dangling),
            "next_turn_ok": reply.text == "ok",
            "enrichment_resumed": any("porto" in f.text.lower() for f in memory.get_facts("alice")),
            "integrity_ok": integrity_ok(memory),
        }


# -- full disk --------------------------------------------------------------------------------


def mount_tmpfs(path: Path, size_kb: int) -> str | None:
    """Mount a small tmpfs at `path`; returns why not, or None when mounted."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def full_disk_during_ingest(mountpoint: Path, size_kb: int = 512) -> dict[str, Any] | str:
    """Ingest into a SQLite file on a tiny tmpfs until it fills. Returns the result, or why it could not run."""
    reason = mount_tmpfs(mountpoint, size_kb)
    if reason:
        return reason
    try:
        url = f"sqlite:///{mountpoint / 'full.db'}"
        acknowledged = 0
        error = None
        with rows_of(url) as memory:
            for s in range(10_000):
                try:
                    memory.ingest("alice", topic_sessions(s, 1, per_session=20))
                except StoreError as exc:
                    error = exc
                    break
                acknowledged += 20
        with rows_of(url) as reopened:
            return {
                "scenario": "full disk during ingest",
                "turns_written": acknowledged,
                "turns_found": reopened.count_turns("alice"),
                "error": str(error) if error else None,
                "error_type": type(error).__name__ if error else None,
                "integrity_ok": integrity_ok(reopened),
            }
    finally:
        unmount(mountpoint)


# -- database locked by another process --------------------------------------------------------

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print(1, flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def short_busy(memory: Memory, busy_ms: int = 200, lock_retries: int = 2) -> Memory:
    """Make `memory`'s store give up on a held lock quickly: busy timeout `busy_ms` per attempt, `lock_retries` retries."""
    from sqlalchemy import event

    store: MemoryStore = memory.store
    store.lock_retries = lock_retries
    store.engine.dispose()

    @event.listens_for(store.engine, "connect")
    def _short_timeout(dbapi_connection, _record):  # runs after the store's own PRAGMAs, so it wins
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")

    return memory


def locked_database(tmp: Path, hold_s: float = 4.0) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'locked.db'}"
    with short_busy(rows_of(url)) as memory:
        memory.add("alice", "c", [NewTurn("user", "before the lock")])
        holder = _python(LOCKER, str(tmp / "locked.db"), str(hold_s))
        _read_progress(holder, 1, 60)
        started = time.monotonic()
        error = None
        try:
            memory.add("alice", "c", [NewTurn("user", "during the lock")])
        except StoreError as exc:
            error = exc
        waited = time.monotonic() - started
        try:
            readable = memory.count_turns("alice")  # WAL: readers need not wait for the writer's lock
        except StoreError:
            readable = None
        holder.wait(timeout=60)
        after = memory.add("alice", "c", [NewTurn("user", "after the lock")])
        return {
            "scenario": "database locked by another process",
            "error": str(error) if error else None,
            "error_type": type(error).__name__ if error else None,
            "seconds_until_error": round(waited, 2),
            "readable_while_locked": readable == 1,
            "write_after_release_ok": bool(after),
            "turns_written": 2,
            "turns_found": memory.count_turns("alice"),
        }


# -- the vector index file truncated or corrupt ------------------------------------------------


def corrupt_index(tmp: Path, embedders, hows: tuple[str, ...] = ("truncate", "garbage", "metadata", "delete")) -> list[dict[str, Any]]:
    """Build and save an index; then for each kind of damage (`truncate`, `garbage`, `metadata`,
    `delete`): damage the saved cache, reopen, and compare: rebuilt, every turn indexed, same hits."""
    url = f"sqlite:///{tmp / 'corrupt.db'}"
    settings = load_settings(db_url=url, home=str(tmp))
    with open_memory(settings, embedders=embedders) as first:
        first.ingest("alice", topic_sessions(0, 4))
        first.flush()
        before = _hit_ids(first, "alice")
        cache = first.retriever.cache_dir
    # closed: the index cache is saved, and free for the next process to claim
    results = []
    for how in hows:
        target = sorted(cache.rglob("*.faiss"))[0]
        if how == "truncate":
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 3])
        elif how == "garbage":
            target.write_bytes(os.urandom(target.stat().st_size))
        elif how == "metadata":
            (cache / "metadata.json").write_text("{not json", encoding="utf-8")
        elif how == "delete":
            target.unlink()
        with open_memory(settings, embedders=embedders) as reopened:  # closing saves a fresh cache for the next damage
            reopened.flush()
            results.append({
                "scenario": f"vector index file {how}",
                "turns_written": 24,
                "turns_found": reopened.count_turns("alice"),
                "turns_indexed": reopened.stats("alice")["index"]["indexed_turns"],
                "search_matches_before": _hit_ids(reopened, "alice") == before,
            })
    return results


# -- backend drops mid-stream; model file missing --------------------------------------------


def backend_drops(agent, turns: int = 6) -> dict[str, Any]:
    """Every other turn the backend drops mid-stream: AgentError, user turn kept and searchable, next turn works."""
    from memstream.agent.controller import AgentError

    failures = successes = 0
    for i in range(turns):
        agent.backend.fail_after = 2 if i % 2 == 0 else None
        agent.backend.enqueue(f"reply number {i} with several words in it")
        try:
            agent.chat(f"message {i} about the zebra {i}", user="alice")
            successes += 1
        except AgentError as exc:
            assert exc.reply.user_turn_id is not None and "saved as turn" in str(exc)
            failures += 1
    user_turns = [t for t in agent.memory.list_turns("alice", limit=1000) if t.role == "user"]
    found = agent.memory.search("alice", "message 0 about the zebra 0", k=3, mode="bm25").hits
    return {
        "scenario": "backend drops mid-stream",
        "agent_errors": failures,
        "replies": successes,
        "turns_written": turns + successes,
        "turns_found": agent.memory.count_turns("alice"),
        "user_turns_kept": len(user_turns),
        "failed_turn_searchable": bool(found) and found[0].turn.text == "message 0 about the zebra 0",
    }


def missing_model(tmp: Path) -> dict[str, Any]:
    from memstream.backends.base import ModelNotFoundError
    from memstream.backends.models import make_backend

    missing = tmp / "models" / "gone.gguf"
    messages = {}
    for name, model in (("missing file", str(missing)), ("empty folder", str(tmp)), ("unknown name", "no-such-model-xyz")):
        settings = load_settings(**{"backend.model": model, "backend.kind": "local"})
        try:
            make_backend(settings.backend, settings.attention)
            messages[name] = None
        except ModelNotFoundError as exc:
            messages[name] = str(exc)
    return {"scenario": "model file missing", "messages": messages}
