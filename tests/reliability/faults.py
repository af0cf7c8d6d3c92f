"""Fault scenarios shared by tests/reliability/test_faults.py (asserts) and benchmarks/reliability.py
(records turns written vs turns found). Each scenario injects one fault against real components
and returns a plain dict of what it saw; the caller decides what must hold.

"Written" always means acknowledged: the process printed the count only after `ingest_sessions`,
`add_turns` or `MemoryAgent.chat` returned (the durability point).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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


def integrity_ok(store: MemoryStore) -> bool:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


# -- SIGKILL during ingest ---------------------------------------------------------------------

INGESTER = """
import sys
from tests.reliability.faults import topic_sessions
from memstream.memory.store import MemoryStore
store = MemoryStore(sys.argv[1])
for s in range(100000):
    store.ingest_sessions("alice", topic_sessions(s, 1, per_session=int(sys.argv[2])))
    print(s + 1, flush=True)
"""


def kill_during_ingest(url: str, per_session: int = 30, after: int = 25) -> dict[str, Any]:
    MemoryStore(url).close()
    process = _python(INGESTER, url, str(per_session))
    acknowledged = _read_progress(process, after, 120)
    time.sleep(random.uniform(0, 0.02))  # land the kill anywhere in the next transaction
    acknowledged = _kill(process, acknowledged)
    store = MemoryStore(url)
    sessions = store.sessions("alice")
    whole = all(len(store.list_turns("alice", session_id=s.id)) == per_session for s in sessions)
    found = store.count_turns("alice")
    result = {
        "scenario": "SIGKILL during ingest",
        "turns_written": acknowledged * per_session,
        "turns_found": found,
        "whole_sessions": whole,
        "integrity_ok": integrity_ok(store),
    }
    store.close()
    return result


# -- SIGKILL during an index rebuild -------------------------------------------------------------

INDEXER = """
import sys
from memstream.config import load_settings
from memstream.memory.store import MemoryStore
from memstream.retrieval.retriever import Retriever
from tests.reliability.faults import topic_sessions
settings = load_settings(db_url=sys.argv[1], home=sys.argv[2])
store = MemoryStore(settings.database_url)
retriever = Retriever.from_settings(settings, store, sync=False)
print(0, flush=True)
for s in range(100000):
    # A live process: commit a session, catch the index up, persist it; the kill lands anywhere in here.
    store.ingest_sessions("alice", topic_sessions(100 + s, 1))
    retriever.sync()
    print(s + 1, flush=True)
"""

QUERIES = ["what about my dog Rex?", "the Lisbon trip", "charity 5K run", "apple pie recipe", "piano recital"]


def _hit_ids(retriever, user: str) -> list[list[int]]:
    return [[h.turn.id for h in retriever.search(user, q, k=8, now=T0 + timedelta(days=400)).hits] for q in QUERIES]


def kill_during_index_rebuild(tmp: Path, embedders, after: int = 2) -> dict[str, Any]:
    """A process ingesting and syncing/saving its index is killed; reopening catches up and matches a clean build."""
    from memstream.config import load_settings
    from memstream.retrieval.retriever import Retriever

    url = f"sqlite:///{tmp / 'index.db'}"
    store = MemoryStore(url)
    store.ingest_sessions("alice", topic_sessions(0, 4))
    process = _python(INDEXER, url, str(tmp))
    acknowledged = _read_progress(process, after, 240)
    time.sleep(random.uniform(0, 0.3))
    acknowledged = _kill(process, acknowledged)
    settings = load_settings(db_url=url, home=str(tmp))
    reopened = Retriever.from_settings(settings, store, embedders=embedders)
    clean = Retriever(store, embedders.get(settings.embedder.model), model_name=settings.embedder.model, cache_dir=None)
    clean.sync()
    result = {
        "scenario": "SIGKILL during index rebuild",
        "turns_written": 4 * 6 + acknowledged * 6,
        "turns_found": store.count_turns("alice"),
        "turns_indexed": reopened.indexed_turns("alice"),
        "search_matches_clean_build": _hit_ids(reopened, "alice") == _hit_ids(clean, "alice"),
        "integrity_ok": integrity_ok(store),
    }
    store.close()
    return result


# -- SIGKILL during background enrichment ----------------------------------------------------

CHATTER = """
import sys, itertools
from memstream.agent.controller import MemoryAgent
from memstream.backends.scripted import ScriptedBackend
from memstream.config import load_settings
from memstream.memory.store import MemoryStore
from memstream.retrieval.retriever import Retriever
settings = load_settings(db_url=sys.argv[1], home=sys.argv[2])
store = MemoryStore(settings.database_url)
agent = MemoryAgent(store, Retriever.from_settings(settings, store), ScriptedBackend(respond=lambda m: "Noted."), settings, enrich=True)
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
    from memstream.config import load_settings
    from memstream.retrieval.retriever import Retriever

    url = f"sqlite:///{tmp / 'enrich.db'}"
    MemoryStore(url).close()
    process = _python(CHATTER, url, str(tmp))
    acknowledged = _read_progress(process, after, 240)
    time.sleep(random.uniform(0, 0.2))
    acknowledged = _kill(process, acknowledged)
    settings = load_settings(db_url=url, home=str(tmp))
    store = MemoryStore(url)
    turn_ids = {t.id for t in store.list_turns("alice", limit=100000)}
    facts = store.get_facts("alice")
    dangling = [f.id for f in facts if not set(f.source_turn_ids) <= turn_ids]
    agent = MemoryAgent(store, Retriever.from_settings(settings, store, embedders=embedders), ScriptedBackend(respond=lambda m: "ok"), settings, enrich=True)
    reply = agent.chat("I moved to Porto.", user="alice")
    agent.enricher.drain()
    enriched_again = any("porto" in f.text.lower() for f in store.get_facts("alice"))
    agent.close()
    result = {
        "scenario": "SIGKILL during background enrichment",
        "turns_written": acknowledged * 2,  # each acknowledged chat stored the user turn and the reply
        "turns_found": len(turn_ids),
        "facts_found": len(facts),
        "dangling_facts": len(dangling),
        "next_turn_ok": reply.text == "ok",
        "enrichment_resumed": enriched_again,
        "integrity_ok": integrity_ok(store),
    }
    store.close()
    return result


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
        store = MemoryStore(url, lock_retries=2)
        acknowledged = 0
        error = None
        for s in range(10_000):
            try:
                store.ingest_sessions("alice", topic_sessions(s, 1, per_session=20))
            except StoreError as exc:
                error = exc
                break
            acknowledged += 20
        store.close()
        reopened = MemoryStore(url)
        result = {
            "scenario": "full disk during ingest",
            "turns_written": acknowledged,
            "turns_found": reopened.count_turns("alice"),
            "error": str(error) if error else None,
            "error_type": type(error).__name__ if error else None,
            "integrity_ok": integrity_ok(reopened),
        }
        reopened.close()
        return result
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


def short_busy_store(url: str, busy_ms: int = 200, lock_retries: int = 2) -> MemoryStore:
    """A store that gives up on a held lock quickly: busy timeout `busy_ms` per attempt, `lock_retries` retries."""
    from sqlalchemy import event

    store = MemoryStore(url, lock_retries=lock_retries)
    store.engine.dispose()

    @event.listens_for(store.engine, "connect")
    def _short_timeout(dbapi_connection, _record):  # runs after the store's own PRAGMAs, so it wins
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")

    return store


def locked_database(tmp: Path, hold_s: float = 4.0) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'locked.db'}"
    store = short_busy_store(url)
    store.add_turns("alice", "c", [NewTurn("user", "before the lock")])
    holder = _python(LOCKER, str(tmp / "locked.db"), str(hold_s))
    _read_progress(holder, 1, 60)
    started = time.monotonic()
    error = None
    try:
        store.add_turns("alice", "c", [NewTurn("user", "during the lock")])
    except StoreError as exc:
        error = exc
    waited = time.monotonic() - started
    try:
        readable = store.count_turns("alice")  # WAL: readers need not wait for the writer's lock
    except StoreError:
        readable = None
    holder.wait(timeout=60)
    after = store.add_turns("alice", "c", [NewTurn("user", "after the lock")])
    result = {
        "scenario": "database locked by another process",
        "error": str(error) if error else None,
        "error_type": type(error).__name__ if error else None,
        "seconds_until_error": round(waited, 2),
        "readable_while_locked": readable == 1,
        "write_after_release_ok": bool(after),
        "turns_written": 2,
        "turns_found": store.count_turns("alice"),
    }
    store.close()
    return result


# -- the vector index file truncated or corrupt ------------------------------------------------


def corrupt_index(tmp: Path, embedders, hows: tuple[str, ...] = ("truncate", "garbage", "metadata", "delete")) -> list[dict[str, Any]]:
    """Build and save an index; then for each kind of damage (`truncate`, `garbage`, `metadata`,
    `delete`): damage the saved cache, reopen, and compare: rebuilt, every turn indexed, same hits."""
    from memstream.config import load_settings
    from memstream.retrieval.retriever import Retriever

    url = f"sqlite:///{tmp / 'corrupt.db'}"
    settings = load_settings(db_url=url, home=str(tmp))
    store = MemoryStore(url)
    store.ingest_sessions("alice", topic_sessions(0, 4))
    first = Retriever.from_settings(settings, store, embedders=embedders)
    before = _hit_ids(first, "alice")
    cache = first.cache_dir
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
        reopened = Retriever.from_settings(settings, store, embedders=embedders)  # sync() saves a fresh cache
        results.append({
            "scenario": f"vector index file {how}",
            "turns_written": 24,
            "turns_found": store.count_turns("alice"),
            "turns_indexed": reopened.indexed_turns("alice"),
            "search_matches_before": _hit_ids(reopened, "alice") == before,
        })
    store.close()
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
    user_turns = [t for t in agent.store.list_turns("alice", limit=1000) if t.role == "user"]
    found = agent.retriever.search("alice", "message 0 about the zebra 0", k=3, mode="bm25").hits
    return {
        "scenario": "backend drops mid-stream",
        "agent_errors": failures,
        "replies": successes,
        "turns_written": turns + successes,
        "turns_found": agent.store.count_turns("alice"),
        "user_turns_kept": len(user_turns),
        "failed_turn_searchable": bool(found) and found[0].turn.text == "message 0 about the zebra 0",
    }


def missing_model(tmp: Path) -> dict[str, Any]:
    from memstream.backends.base import ModelNotFoundError
    from memstream.backends.models import make_backend
    from memstream.config import load_settings

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
