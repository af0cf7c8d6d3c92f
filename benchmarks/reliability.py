"""Reliability figures: fuzz case counts, fault scenarios (turns written vs found), store load with
several writer processes (SQLite and PostgreSQL), and a soak of agent turns with a scripted backend.
Writes reports/reliability.json and reports/reliability.md.

    python benchmarks/reliability.py                       # everything, default sizes
    python benchmarks/reliability.py --only fuzz,faults    # some sections
    python benchmarks/reliability.py --soak-turns 2000     # a shorter soak

The HTTP-server load section (`--only http`, `--http-clients N`) drives one `memstream serve` with
benchmarks/service_load.py's client loop. Every section opens memory as the front ends do, with
`open_memory` (rows only, `index=False`, where no index is involved).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks._report import write_report  # noqa: E402

SECTIONS = ("fuzz", "faults", "load", "soak", "http", "isolation")
FUZZ_EXAMPLES = 1000
CHAT_FUZZ_EXAMPLES = 200  # each case embeds text: kept smaller
WRITERS = 4
TURNS_PER_WRITER = 400
SOAK_TURNS = 10_000
DEV_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:55432/memstream_test"


# -- fuzz ---------------------------------------------------------------------------------------


def fuzz(examples: int, embedders) -> list[dict]:
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend
    from memstream.config import load_settings
    from memstream.memory import core, open_memory
    from tests.reliability import fuzz_targets as ft

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="memstream-fuzz-"))
    os.environ["MEMSTREAM_HOME"] = str(tmp / "home")
    scratch = open_memory(load_settings(db_url="sqlite://"), index=False)  # what an importer parses must store there
    targets = [(f"importer:{fmt}", lambda fmt=fmt: ft.importer_target(fmt, scratch), examples) for fmt in ("locomo", "longmemeval", "jsonl")]
    targets += [
        ("extract_time_window", ft.time_window_target, examples),
        ("parse_datetime", ft.parse_datetime_target, examples // 4),  # dateparser is slow per call
        ("load_settings", lambda: ft.config_target(tmp), examples),
    ]
    db_url = f"sqlite:///{tmp / 'cli.db'}"
    sample = tmp / "log.jsonl"
    sample.write_text('{"role": "user", "content": "I walked my dog Rex in May", "time": "2023-05-01"}\n')
    core.EmbedderCache = lambda: embedders  # the CLI opens its memory with a new cache per command: share the loaded model
    from typer.testing import CliRunner

    from memstream.cli import app

    CliRunner().invoke(app, ["ingest", str(sample), "--user", "alice", "--db", db_url])
    targets.append(("cli", lambda: ft.cli_target(db_url, str(sample)), examples // 2))
    settings = load_settings(db_url=f"sqlite:///{tmp / 'agent.db'}", home=str(tmp))
    agent = MemoryAgent(open_memory(settings, embedders=embedders), ScriptedBackend(), settings, enrich=False, owns_memory=True)
    targets.append(("MemoryAgent.chat", lambda: ft.chat_target(agent), min(examples, CHAT_FUZZ_EXAMPLES)))
    for name, build, count in targets:
        check, strategy, allowed = build()
        started = time.perf_counter()
        crash = None
        try:
            counts = ft.run_target(check, strategy, allowed, count)
        except Exception as exc:  # recorded in the report: a crash is the finding, not a reason to stop
            counts, crash = ft.Counts(), f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        rows.append({
            "target": name, "cases": counts.cases, "clear_errors": counts.clear_errors, "crashes": 0 if crash is None else 1,
            "errors_by_type": counts.errors_by_type, "crash": crash, "seconds": round(time.perf_counter() - started, 1),
        })
        print(f"fuzz {name}: {rows[-1]['cases']} cases, {rows[-1]['clear_errors']} clear errors, crash={crash}", flush=True)
    agent.close()
    scratch.close()
    return rows


# -- faults -------------------------------------------------------------------------------------


def faults(embedders) -> list[dict]:
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend
    from memstream.config import load_settings
    from memstream.memory import open_memory
    from tests.reliability import faults as f

    tmp = Path(tempfile.mkdtemp(prefix="memstream-faults-"))
    rows = [f.kill_during_ingest(f"sqlite:///{tmp / 'ingest.db'}")]
    rows.append(f.kill_during_index_rebuild(tmp / "index", embedders) if (tmp / "index").mkdir() is None else None)
    rows.append(f.kill_during_enrichment(tmp / "enrich", embedders) if (tmp / "enrich").mkdir() is None else None)
    full = f.full_disk_during_ingest(tmp / "small-disk")
    rows.append(full if isinstance(full, dict) else {"scenario": "full disk during ingest", "skipped": full})
    (tmp / "lock").mkdir()
    rows.append(f.locked_database(tmp / "lock"))
    (tmp / "corrupt").mkdir()
    rows += f.corrupt_index(tmp / "corrupt", embedders)
    settings = load_settings(db_url=f"sqlite:///{tmp / 'drop.db'}", home=str(tmp))
    agent = MemoryAgent(open_memory(settings, embedders=embedders), ScriptedBackend(), settings, enrich=False, owns_memory=True)
    rows.append(f.backend_drops(agent))
    agent.close()
    rows.append(f.missing_model(tmp))
    for row in rows:
        print("fault", row, flush=True)
    return rows


# -- store load ---------------------------------------------------------------------------------

WRITER = """
import sys, time, json
from memstream.config import load_settings
from memstream.memory import open_memory
from memstream.memory.model import NewTurn
from memstream.memory.store import StoreError
url, user, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
memory = open_memory(load_settings(db_url=url), index=False)
print("ready", flush=True)
sys.stdin.readline()  # start together
errors = 0
latencies = []
started = time.perf_counter()
for i in range(turns):
    t0 = time.perf_counter()
    try:
        memory.add(user, "load", [NewTurn("user", f"{user} turn {i} " + "x" * 200)])
    except StoreError:
        errors += 1
    latencies.append(time.perf_counter() - t0)
print(json.dumps({"seconds": time.perf_counter() - started, "errors": errors, "latencies": latencies}), flush=True)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def store_load(url: str, backend: str, writers: int, turns: int) -> dict:
    """`writers` processes each commit `turns` single-turn transactions (the live chat path) at once."""
    import json

    from memstream.config import load_settings
    from memstream.memory import open_memory

    open_memory(load_settings(db_url=url), index=False).close()  # the schema exists before the writers start
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), url, f"load-{run}-{w}", str(turns)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for w in range(writers)
    ]
    for p in processes:
        assert p.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [json.loads(p.communicate(timeout=1800)[0].strip().splitlines()[-1]) for p in processes]
    wall = time.perf_counter() - started
    with open_memory(load_settings(db_url=url), index=False) as memory:
        found = sum(memory.count_turns(f"load-{run}-{w}") for w in range(writers))
        positions_ok = all(
            [t.position for t in memory.list_turns(f"load-{run}-{w}", limit=turns + 10)] == list(range(turns - o["errors"]))
            for w, o in enumerate(outputs)
        )
        for w in range(writers):
            memory.forget_user(f"load-{run}-{w}")
    latencies = [x for o in outputs for x in o["latencies"]]
    return {
        "backend": backend, "writers": writers, "turns_written": writers * turns - sum(o["errors"] for o in outputs), "turns_found": found,
        "turns_per_s": round(writers * turns / wall, 1), "lock_errors_after_retry": sum(o["errors"] for o in outputs),
        "commit_ms_p50": round(_percentile(latencies, 0.5) * 1000, 2), "commit_ms_p95": round(_percentile(latencies, 0.95) * 1000, 2),
        "commit_ms_p99": round(_percentile(latencies, 0.99) * 1000, 2), "positions_contiguous": positions_ok,
    }


def pg_url(explicit: str | None) -> str | None:
    """The PostgreSQL URL to load, if a server answers there."""
    url = explicit or os.environ.get("MEMSTREAM_TEST_PG_URL") or DEV_PG_URL
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return url
    except Exception as exc:  # no server (or no driver): the section is recorded as not run
        print(f"PostgreSQL not reachable ({type(exc).__name__}); skipping its load run", flush=True)
        return None


# -- soak ---------------------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SOAK_MESSAGES = [
    "I went hiking at Mount Tam with my friend Leo today.",
    "What did I say about hiking?",
    "My sister Clara moved to Lisbon for a new job.",
    "hello",
    "Where does my sister live now?",
    "I baked a sourdough loaf; the crust came out great.",
    "What did I bake last week?",
    "thanks!",
]


def soak(turns: int, embedders) -> dict:
    """`turns` chat turns (user message + reply each) through one agent: latency and RSS, first vs last 1000."""
    from datetime import datetime, timedelta

    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend
    from memstream.config import load_settings
    from memstream.memory import open_memory

    tmp = Path(tempfile.mkdtemp(prefix="memstream-soak-"))
    settings = load_settings(db_url=f"sqlite:///{tmp / 'soak.db'}", home=str(tmp))
    memory = open_memory(settings, embedders=embedders)
    agent = MemoryAgent(memory, ScriptedBackend(respond=lambda m: "Noted, thanks for telling me."), settings, enrich=True)
    start = datetime(2024, 1, 1, 9, 0)
    latencies: list[float] = []
    rss: list[tuple[int, float]] = [(0, rss_mb())]
    window = min(1000, max(1, turns // 4))
    for i in range(turns):
        message = SOAK_MESSAGES[i % len(SOAK_MESSAGES)] + f" ({i})"
        t0 = time.perf_counter()
        agent.chat(message, user=f"soak-{i % 4}", conversation="daily", at=start + timedelta(minutes=7 * i))
        latencies.append(time.perf_counter() - t0)
        if (i + 1) % window == 0:
            rss.append((i + 1, rss_mb()))
            print(f"soak {i + 1}/{turns}: p50 {statistics.median(latencies[-window:]) * 1000:.1f} ms, rss {rss[-1][1]:.0f} MB", flush=True)
    agent.enricher.drain()
    stats = agent.enricher.stats
    agent.close()
    first, last = latencies[:window], latencies[-window:]
    result = {
        "turns": turns, "stored_turns": memory.count_turns(), "window": window,
        "first_p50_ms": round(_percentile(first, 0.5) * 1000, 1), "first_p95_ms": round(_percentile(first, 0.95) * 1000, 1),
        "last_p50_ms": round(_percentile(last, 0.5) * 1000, 1), "last_p95_ms": round(_percentile(last, 0.95) * 1000, 1),
        # RSS after the first window (model and caches warm) to the end: growth that is not warm-up.
        "rss_after_first_window_mb": round(rss[1][1], 1) if len(rss) > 1 else None, "rss_end_mb": round(rss[-1][1], 1),
        "rss_growth_mb": round(rss[-1][1] - rss[1][1], 1) if len(rss) > 1 else None,
        "rss_samples": rss, "enrich_jobs": stats.jobs, "enrich_failures": stats.failures,
    }
    memory.close()
    return result


# -- HTTP server --------------------------------------------------------------------------------


def http_server_load(clients: int, seconds: float) -> dict:
    """N concurrent streaming clients against one `memstream serve` on loopback (scripted backend, SQLite):
    requests/s, p50/p95/p99, errors, and the server's RSS over the run (memory growth)."""
    from benchmarks.service_load import _run_config  # the same load driver, one process

    with tempfile.TemporaryDirectory(prefix="memstream-http-") as tmp:
        home = Path(tmp)
        result = _run_config("1 process, SQLite", f"sqlite:///{home / 'load.db'}", 1, clients, seconds, home)
    samples = [mb[0] for _, mb in result.get("rss_mb") or [] if mb and mb[0] is not None]
    result["rss_growth_mb"] = round(samples[-1] - samples[0], 1) if len(samples) >= 2 else None
    return result


# -- isolation ----------------------------------------------------------------------------------

ISO_MARK = {"alice": "zebrafinch", "bob": "walrusoboe"}
ISO_QUERIES = ["zebrafinch", "walrusoboe", "what pet do I have?", "where does my sister live?", "what did I do last May?"]


def _iso_seed(memory, user: str, mark: str) -> None:
    from datetime import datetime, timedelta

    from memstream.memory.model import NewSession, NewTurn

    t0 = datetime(2023, 5, 8, 14, 0)
    sessions = [
        NewSession("c1", [NewTurn("user", f"I adopted a dog named {mark.title()} last May.", "user", t0),
                          NewTurn("assistant", f"{mark.title()} is a lovely name.", "assistant", t0),
                          NewTurn("user", f"My sister lives in {mark}ville.", "user", t0)], t0),
        NewSession("c2", [NewTurn("user", f"The {mark} code word is secret.", "user", t0 + timedelta(days=30))], t0 + timedelta(days=30)),
    ]
    results = memory.ingest(user, sessions)
    memory.add_fact(user, "user.pet", f"The user has a dog named {mark.title()}", [results[0][1][0]], valid_from=t0)
    memory.set_session_summary(user, results[0][0], f"Talked about the dog {mark.title()}.")


class _Matrix:
    """Counts per (read path, database, state): reads made, rows returned, leaks (the other user's marker or ids)."""

    def __init__(self):
        self.cells: dict[tuple[str, str, str], dict[str, int]] = {}

    def read(self, path: str, db: str, state: str, rows: list, other_mark: str, other_ids: set = frozenset(), ids=lambda r: None) -> None:
        import json

        cell = self.cells.setdefault((path, db, state), {"reads": 0, "rows": 0, "leaks": 0})
        cell["reads"] += 1
        cell["rows"] += len(rows)
        cell["leaks"] += sum(1 for r in rows if other_mark in json.dumps(r, default=str).lower() or ids(r) in other_ids)


def _iso_library(matrix: _Matrix, db: str, url: str, home: Path, embedders, fresh) -> None:
    """Every Memory and agent read path, for each reader, fresh / after the other is forgotten / after a rebuild."""
    from dataclasses import asdict

    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend
    from memstream.config import load_settings
    from memstream.memory.core import open_memory

    fresh(url)
    settings = load_settings(db_url=url, home=str(home), **{"agent.enrich": False})
    memory = open_memory(settings, embedders=embedders, background=False)
    for user, mark in ISO_MARK.items():
        _iso_seed(memory, user, mark)
    memory.refresh()

    def sweep(state: str, readers=("alice", "bob")) -> None:
        for reader in readers:
            other = "bob" if reader == "alice" else "alice"
            mark = ISO_MARK[other]
            turn_ids = {t.id for t in memory.list_turns(other, limit=1000)}
            session_ids = {s.id for s in memory.sessions(other)}
            matrix.read("list_turns", db, state, [asdict(t) for t in memory.list_turns(reader, limit=1000)], mark, turn_ids, lambda r: r["id"])
            matrix.read("get_turns (other's ids)", db, state, memory.get_turns(reader, sorted(turn_ids)), mark)
            matrix.read("recent_turns", db, state, [asdict(t) for t in memory.recent_turns(reader, "c1", 100)], mark)
            matrix.read("facts", db, state, [asdict(f) for f in memory.get_facts(reader)], mark)
            matrix.read("sessions + summaries", db, state, [asdict(x) for x in memory.sessions(reader)], mark, session_ids, lambda r: r["id"])
            matrix.read("get_session (other's ids)", db, state, [x for x in (memory.get_session(reader, i) for i in session_ids) if x], mark)
            matrix.read("export", db, state, list(memory.export_user(reader)), mark)
            for query in ISO_QUERIES:
                for mode in ("memstream", "dense", "bm25"):
                    hits = memory.search(reader, query, k=50, mode=mode).hits
                    matrix.read(f"search ({mode})", db, state, [{"text": h.turn.text, "user": h.turn.user_id} for h in hits], mark,
                                turn_ids, lambda r: None)
                sessions = memory.search_sessions(reader, query, k=10)
                matrix.read("search_sessions", db, state, [{"id": x.session_id} for x in sessions], mark, session_ids, lambda r: r["id"])
            backend = ScriptedBackend(respond=lambda m: "ok")
            agent = MemoryAgent(memory, backend, settings, enrich=False)
            for question in ("What is my dog's name?", "Where does my sister live?", "What did I do last May?"):
                reply = agent.chat(question, reader, "c1")
                prompt = " ".join(m["content"] for m in backend.calls[-1])
                matrix.read("agent prompt + memories", db, state,
                            [{"prompt": prompt}] + [{"text": h.turn.text} for h in reply.memories], mark)

    sweep("fresh")
    memory.forget_user("bob")
    memory.refresh()
    sweep("after forget(bob)", readers=("alice",))
    _iso_seed(memory, "bob", ISO_MARK["bob"])  # new rows may reuse bob's old ids (SQLite)
    memory.close()
    memory = open_memory(settings, embedders=embedders, background=False, cache_dir=None)  # no cache: rebuilt from the database
    sweep("rebuilt index")
    memory.close()


def _iso_http(matrix: _Matrix, db: str, url: str, home: Path, embedders, fresh) -> None:
    """The same user name in two tenants of one server: list, search, export, memory chat, delete by id."""
    import httpx

    from memstream.backends.scripted import ScriptedBackend
    from memstream.config import load_settings
    from memstream.server.app import ServerThread, create_app

    fresh(url)
    keys = {"iso-key-acme-0123456789": "acme", "iso-key-globex-0123456789": "globex"}
    settings = load_settings(db_url=url, home=str(home), **{"server.api_keys": keys, "agent.enrich": False})
    backend = ScriptedBackend(respond=lambda m: "ok")
    marks = {"acme": ISO_MARK["alice"], "globex": ISO_MARK["bob"]}
    with ServerThread(create_app(settings, backend, embedders=embedders)) as server:
        auth = {tenant: {"Authorization": f"Bearer {key}"} for key, tenant in keys.items()}
        ids = {}
        for tenant, mark in marks.items():
            turns = [{"role": "user", "text": f"I adopted a dog named {mark.title()}.", "time": "2023-05-08T14:00:00"},
                     {"role": "user", "text": f"The {mark} code word is secret.", "time": "2023-06-08T14:00:00"}]
            added = httpx.post(f"{server.url}/v1/memories", json={"user": "alice", "turns": turns}, headers=auth[tenant], timeout=60)
            ids[tenant] = {m["id"] for m in added.json()["data"]}
        for tenant in marks:
            other = "globex" if tenant == "acme" else "acme"
            mark, h = marks[other], auth[tenant]
            listed = httpx.get(f"{server.url}/v1/memories", params={"user": "alice", "limit": 500}, headers=h).json()["data"]
            matrix.read("HTTP list", db, "two tenants", listed, mark, ids[other], lambda r: r["id"])
            for query in ISO_QUERIES:
                found = httpx.post(f"{server.url}/v1/memories/search", json={"user": "alice", "query": query, "k": 50}, headers=h, timeout=60)
                matrix.read("HTTP search", db, "two tenants", found.json()["data"], mark, ids[other], lambda r: r["id"])
            exported = httpx.get(f"{server.url}/v1/users/alice/export", headers=h).text.splitlines()
            matrix.read("HTTP export", db, "two tenants", exported, mark)
            for question in ("What is my dog's name?", "What is the code word?"):
                reply = httpx.post(f"{server.url}/v1/chat/completions", headers=h, timeout=60, json={
                    "model": "memstream/scripted", "user": "alice", "messages": [{"role": "user", "content": question}]}).json()
                prompt = " ".join(m["content"] for m in backend.calls[-1])
                matrix.read("HTTP memory chat (prompt + memories)", db, "two tenants", [{"prompt": prompt}, reply["memstream"]], mark)
            deletes = [httpx.delete(f"{server.url}/v1/memories/{i}", params={"user": "alice"}, headers=h).status_code for i in ids[other]]
            matrix.read("HTTP delete of the other's ids", db, "two tenants", [c for c in deletes if c != 404], mark)


def isolation(embedders, pg: str | None) -> list[dict]:
    """The isolation matrix: read paths x readers x databases (x states), with reads, rows and leaks counted."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.conftest import reset_postgres

    matrix = _Matrix()
    databases = [("SQLite", None)] + ([("PostgreSQL", pg)] if pg else [])
    for db, url in databases:
        for part in (_iso_library, _iso_http):
            tmp = Path(tempfile.mkdtemp(prefix="memstream-iso-"))
            target = url or f"sqlite:///{tmp / 'iso.db'}"
            part(matrix, db, target, tmp / "home", embedders, reset_postgres if url else (lambda u: None))
    rows = [{"path": path, "database": db, "state": state, **cell} for (path, db, state), cell in matrix.cells.items()]
    for row in rows:
        print("isolation", row, flush=True)
    return rows


# -- main ---------------------------------------------------------------------------------------


def pip_audit() -> dict:
    """Run pip-audit on this environment (needs network to the vulnerability service)."""
    import json

    tool = Path(sys.executable).with_name("pip-audit")
    try:
        done = subprocess.run([str(tool), "--format", "json", "--progress-spinner", "off"], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ran": False, "error": str(exc)}
    try:
        deps = json.loads(done.stdout)["dependencies"]
    except (ValueError, KeyError):
        return {"ran": True, "returncode": done.returncode, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    audited = [d for d in deps if "skip_reason" not in d]
    return {
        "ran": True, "returncode": done.returncode, "dependencies": len(deps), "audited": len(audited),
        "vulnerabilities": sum(len(d.get("vulns", [])) for d in audited),
        "not_audited_reason": next((d["skip_reason"].split(":")[0] for d in deps if "skip_reason" in d), None),
    }


def summary_rows(results: dict) -> list[dict]:
    rows = []
    for r in results.get("fuzz", []):
        rows.append({"section": "fuzz", "what": r["target"], "figure": f"{r['cases']} cases, {r['clear_errors']} clear errors, {r['crashes']} crashes"})
    for r in results.get("faults", []):
        if "turns_written" in r:
            figure = f"written {r['turns_written']}, found {r['turns_found']}"
            figure += "".join(f", {k} {v}" for k, v in r.items() if k not in ("scenario", "turns_written", "turns_found"))
        else:
            figure = r.get("skipped") or "; ".join(f"{k}: {v}" for k, v in r.get("messages", {}).items())
        rows.append({"section": "faults", "what": r["scenario"], "figure": figure[:300]})
    for r in results.get("load", []):
        rows.append({"section": "load", "what": f"{r['writers']} writer processes, {r['backend']}",
                     "figure": f"{r['turns_per_s']} turns/s, commit p50/p95/p99 {r['commit_ms_p50']}/{r['commit_ms_p95']}/{r['commit_ms_p99']} ms, lock errors after retry {r['lock_errors_after_retry']}, written {r['turns_written']} found {r['turns_found']}"})
    if "soak" in results:
        r = results["soak"]
        rows.append({"section": "soak", "what": f"{r['turns']} agent turns (scripted backend)",
                     "figure": f"p50 {r['first_p50_ms']} -> {r['last_p50_ms']} ms, p95 {r['first_p95_ms']} -> {r['last_p95_ms']} ms (first vs last {r['window']}), RSS growth {r['rss_growth_mb']} MB"})
    if "http" in results:
        r = results["http"]
        rows.append({"section": "http", "what": f"HTTP server, {r.get('clients')} streaming clients, {r.get('seconds')} s",
                     "figure": f"{r.get('rps')} req/s, p50/p95/p99 {r.get('p50_ms')}/{r.get('p95_ms')}/{r.get('p99_ms')} ms, errors {r.get('errors')}, RSS growth {r.get('rss_growth_mb')} MB"
                               + (f"; index backlog at the stop {r['index_backlog_keys']} keys, embedded in {r['drain_s']} s more: "
                                  f"{r['requests'] / (r['seconds'] + r['drain_s']):.2f} req/s sustained"
                                  if r.get("index_backlog_keys") is not None else "")})
    iso = results.get("isolation", [])
    for db in dict.fromkeys(r["database"] for r in iso):
        cells = [r for r in iso if r["database"] == db]
        rows.append({"section": "isolation", "what": f"{db}: {len({c['path'] for c in cells})} read paths x 2 readers x "
                     f"{len({c['state'] for c in cells})} states (fresh, after forget, rebuilt index, two tenants over HTTP)",
                     "figure": f"{sum(c['reads'] for c in cells)} reads, {sum(c['rows'] for c in cells)} rows returned, "
                               f"{sum(c['leaks'] for c in cells)} leaks"})
        for path in dict.fromkeys(c["path"] for c in cells):
            mine = [c for c in cells if c["path"] == path]
            rows.append({"section": "isolation", "what": f"{db}: {path}",
                         "figure": f"{sum(c['reads'] for c in mine)} reads ({', '.join(c['state'] for c in mine)}), "
                                   f"{sum(c['rows'] for c in mine)} rows, {sum(c['leaks'] for c in mine)} leaks"})
    if "pip_audit" in results:
        r = results["pip_audit"]
        rows.append({"section": "security", "what": "pip-audit", "figure": f"{r.get('audited')} of {r.get('dependencies')} dependencies audited, {r.get('vulnerabilities')} vulnerabilities" + (f" ({r['not_audited_reason']})" if r.get("not_audited_reason") else "")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(s for s in SECTIONS if s != "http"), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--fuzz-examples", type=int, default=FUZZ_EXAMPLES)
    parser.add_argument("--writers", type=int, default=WRITERS)
    parser.add_argument("--turns-per-writer", type=int, default=TURNS_PER_WRITER)
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL for the load run (default: MEMSTREAM_TEST_PG_URL or the dev server)")
    parser.add_argument("--soak-turns", type=int, default=SOAK_TURNS)
    parser.add_argument("--http-clients", type=int, default=8, help="concurrent clients for the HTTP section (--only http)")
    parser.add_argument("--pip-audit", action="store_true", help="also run pip-audit and record the result")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    from memstream.retrieval.embedder import EmbedderCache

    embedders = EmbedderCache()
    results: dict = {}
    if "fuzz" in sections:
        results["fuzz"] = fuzz(args.fuzz_examples, embedders)
    if "faults" in sections:
        results["faults"] = faults(embedders)
    if "load" in sections:
        loads = []
        with tempfile.TemporaryDirectory(prefix="memstream-load-") as tmp:
            loads.append(store_load(f"sqlite:///{Path(tmp) / 'load.db'}", "sqlite", args.writers, args.turns_per_writer))
        url = pg_url(args.pg_url)
        if url:
            loads.append(store_load(url, "postgresql", args.writers, args.turns_per_writer))
        results["load"] = loads
        for r in loads:
            print("load", r, flush=True)
    if "soak" in sections:
        results["soak"] = soak(args.soak_turns, embedders)
    if "http" in sections:
        results["http"] = http_server_load(args.http_clients, 30.0)
    if "isolation" in sections:
        results["isolation"] = isolation(embedders, pg_url(args.pg_url))
    if args.pip_audit:
        results["pip_audit"] = pip_audit()
    # Sections not run this time keep their last figures.
    previous = REPO_ROOT / "reports" / "reliability.json"
    if previous.exists():
        import json

        old = json.loads(previous.read_text())
        results = {**{k: old[k] for k in ("fuzz", "faults", "load", "soak", "http", "isolation", "pip_audit") if k in old}, **results}
    rows = summary_rows(results)
    write_report("reliability", results, rows, title="Reliability and security", notes="Sizes: see each section in reliability.json. Rerun a section: `python benchmarks/reliability.py --only isolation` (fuzz, faults, load, soak, http, isolation). Tests asserting the same properties: tests/reliability/ (isolation: also tests/server). The machine was shared with other jobs.")


if __name__ == "__main__":
    main()
