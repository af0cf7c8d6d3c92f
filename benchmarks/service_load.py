"""HTTP load on `memstream serve` with a remote (OpenAI-compatible) backend: concurrent memory chats,
memory search, the queue cap, and (with a PostgreSQL URL) 2 server processes on one database.
Writes reports/service_load.json (+ .md).

    python benchmarks/service_load.py                          # 1, 8, 32, 64 clients, 60 s each
    python benchmarks/service_load.py --seconds 20 --levels 1,8,32,64 [--pg-url postgresql+psycopg://...]

The backend is `openai`, pointed at benchmarks/stub_upstream.py (its own process on loopback) that
answers every chat after a fixed --delay-ms (300 ms): what is measured is memstream's own work per
memory chat (HTTP, auth, admission, storing both turns, retrieval with a query embedding, the prompt,
the upstream call) and how much of it overlaps between clients. Each client is one memory user asking
non-streamed memory chats back to back (`--stream` streams them); `search` runs 8 clients doing memory
search only; `overload` sends 64 clients at a server whose queue holds fewer (server.chat_workers 16,
server.max_queue 16): everything past the cap must be 429/503 at once, with admitted latency bounded.
After each level the load waits for the servers' background indexers to embed what its writes queued, and
reports that backlog, the time it took and `sustained_rps` (answers over load time plus drain time): a server
that answers faster than it indexes is borrowing from the next minute, which the answer rate alone hides.

The client loop, `run_load`, is benchmarks/load_driver.py's (reliability.py drives it too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from _report import write_report  # noqa: E402
from load_driver import DRAIN_S, USERS, run_load, seed_memories  # noqa: E402

from memstream.server.process import ServerProcess, free_port, server_env  # noqa: E402

LEVELS = (1, 8, 32, 64)
SECONDS = 60.0
SEARCH_CLIENTS = 8
DELAY_MS = 300.0
KEY = "bench-key-" + "0" * 12


class StubUpstream:
    """benchmarks/stub_upstream.py in its own process on a free loopback port."""

    def __init__(self, delay_ms: float):
        self.port = free_port()
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "StubUpstream":
        script = Path(__file__).resolve().parent / "stub_upstream.py"
        self.proc = subprocess.Popen([sys.executable, str(script), "--port", str(self.port), "--delay-ms", str(self.delay_ms)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the stub upstream did not start")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


EMBEDDER_RUNTIME = "onnx-int8"
"""What the servers embed with by default (--embedder-runtime): the int8 runtime a CPU server is advised to use."""


def retrieval_env(dense_kinds: str = "", round_vectors: str = "") -> dict[str, str]:
    """The servers' retrieval settings the options name ('' keeps a default): `dense_kinds` comma-separated."""
    env = {"MEMSTREAM_RETRIEVAL__DENSE_KINDS": json.dumps(dense_kinds.split(",")) if dense_kinds else "",
           "MEMSTREAM_RETRIEVAL__ROUND_VECTORS": round_vectors}
    return {name: value for name, value in env.items() if value}


def remote_env(db_url: str, home: Path, upstream: str, tenant: str, runtime: str, retrieval: dict[str, str] | None = None,
               **server: str) -> dict[str, str]:
    """A server with the openai backend on the stub, API key KEY for `tenant`, enrichment off; `retrieval`: retrieval_env()."""
    extra = {f"MEMSTREAM_SERVER__{name.upper()}": value for name, value in server.items()} | (retrieval or {})
    return server_env(db_url, home, {KEY: tenant}, index_refresh_s=1.0, backend="openai", MEMSTREAM_AGENT__ENRICH="false",
                      MEMSTREAM_BACKEND__BASE_URL=upstream, MEMSTREAM_BACKEND__MODEL="stub", MEMSTREAM_BACKEND__MAX_RETRIES="0",
                      MEMSTREAM_EMBEDDER__RUNTIME=runtime, **extra)


def _serve(env: dict[str, str], processes: int, work, source: Path | None = None) -> dict:
    """`source`: another source tree of memstream to run the servers from (benchmarks/service_ab.py)."""
    servers = [ServerProcess(env, cwd=source).launch() for _ in range(processes)]
    try:
        for server in servers:
            server.wait_ready(300)
        return work([s.url for s in servers], [s.proc.pid for s in servers])
    finally:
        for server in servers:
            server.stop()


def _run_config(name: str, db_url: str, processes: int, clients: int, seconds: float, home: Path) -> dict:
    """Mixed streamed chat + search with the scripted backend (no model time): reliability.py's HTTP section."""
    env = server_env(db_url, home, {KEY: f"bench-{uuid.uuid4().hex[:8]}"}, index_refresh_s=1.0, MEMSTREAM_AGENT__ENRICH="false")
    result = _serve(env, processes, lambda urls, pids: run_load(urls, KEY, clients, seconds, pids=pids, drain_s=DRAIN_S))
    return {"config": name, "processes": processes, **result}


def remote_levels(db_url: str, home: Path, upstream: str, levels, seconds: float, stream: bool, processes: int = 1,
                  name: str = "1 process, SQLite", runtime: str = EMBEDDER_RUNTIME, search: bool = True, retrieval: dict[str, str] | None = None,
                  source: Path | None = None) -> list[dict]:
    """One server (or `processes`), each level in turn: memory chats only, then (`search`) searches only. `source`: run
    the servers from this source tree of memstream (`python -m` imports the package from its working directory)."""
    env = remote_env(db_url, home, upstream, f"bench-{uuid.uuid4().hex[:8]}", runtime, retrieval)
    in_postgres = db_url.startswith("postgresql")

    def work(urls, pids):
        runs = []
        seed_memories(urls[0], KEY, USERS)
        for clients in levels:
            result = run_load(urls, KEY, clients, seconds, stream=stream, search_every=0, pids=pids, seed=False, model="memstream/stub",
                              database=in_postgres, drain_s=DRAIN_S)
            runs.append({"config": name, "kind": "memory chat", **result})
            print(f"{name}: {clients} clients, {result['chat']['rps']} chats/s ({result['chat']['sustained_rps']} sustained, "
                  f"backlog {result['index_backlog_keys']} keys drained in {result['drain_s']} s), p99 {result['chat']['p99_ms']} ms, "
                  f"{result['errors']} errors", flush=True)
        if not search:
            return runs
        result = run_load(urls, KEY, SEARCH_CLIENTS, seconds, search_every=1, pids=pids, seed=False, database=in_postgres,
                          drain_s=DRAIN_S)
        runs.append({"config": name, "kind": "memory search", **result})
        print(f"{name}: search {SEARCH_CLIENTS} clients, {result['search']['rps']} req/s", flush=True)
        return runs

    return _serve(env, processes, work, source)


def overload(db_url: str, home: Path, upstream: str, clients: int, seconds: float, runtime: str = EMBEDDER_RUNTIME,
             retrieval: dict[str, str] | None = None) -> dict:
    """More clients than the server admits: only 429/503 past the cap, admitted latency bounded."""
    caps = {"chat_workers": "16", "max_queue": "16", "max_queue_per_key": "64"}
    env = remote_env(db_url, home, upstream, f"bench-{uuid.uuid4().hex[:8]}", runtime, retrieval, **caps)
    result = _serve(env, 1, lambda urls, pids: run_load(urls, KEY, clients, seconds, stream=False, search_every=0, pids=pids,
                                                         model="memstream/stub", drain_s=DRAIN_S))
    return {"config": "1 process, SQLite, queue cap 16 running + 16 waiting", "kind": "memory chat (overload)", "caps": caps, **result}


def local_interference(db_url: str, home: Path, seconds: float, model_process: bool = True) -> dict:
    """The local model: memory-search latency idle, then while another client runs long generations back to back.
    `model_process`: the model in a child process (server.model_process, the default) or in the server's."""
    env = server_env(db_url, home, {KEY: f"bench-{uuid.uuid4().hex[:8]}"}, index_refresh_s=1.0, backend="local",
                     MEMSTREAM_AGENT__ENRICH="false", MEMSTREAM_SERVER__MAX_TOKENS_LIMIT="2048",
                     MEMSTREAM_SERVER__MODEL_PROCESS=str(model_process).lower())

    def work(urls, pids):
        seed_memories(urls[0], KEY, 2)
        idle = run_load(urls, KEY, 1, seconds, search_every=1, users=2, seed=False)
        stop = threading.Event()
        generated = {"chats": 0}

        def generate() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=600) as http:
                while not stop.is_set():
                    body = {"model": "smollm2-135m-instruct", "max_tokens": 512, "stream": True,
                            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}
                    with http.stream("POST", f"{urls[0]}/v1/chat/completions", json=body) as response:
                        for _ in response.iter_lines():
                            if stop.is_set():
                                break
                    generated["chats"] += 1

        thread = threading.Thread(target=generate)
        thread.start()
        time.sleep(3)  # the generation is under way
        busy = run_load(urls, KEY, 1, seconds, search_every=1, users=2, seed=False)
        stop.set()
        thread.join(120)
        where = "its own process" if model_process else "the server's process"
        return {"config": f"1 process, SQLite, local model in {where}", "kind": "memory search beside a long generation",
                "model_process": model_process,
                "idle": idle["search"], "during_generation": busy["search"], "long_generations": generated["chats"],
                "p95_ratio": round(busy["search"]["p95_ms"] / idle["search"]["p95_ms"], 2)
                if idle["search"]["p95_ms"] and busy["search"]["p95_ms"] else None}

    return _serve(env, 1, work)


def speedup_over_one(runs: list[dict], config: str) -> dict[str, float]:
    """Sustained memory chats/s (indexing included) at each level of `config` over its 1-client figure."""
    chats = {r["clients"]: r["chat"]["sustained_rps"] for r in runs if r["kind"] == "memory chat" and r["config"] == config}
    return {str(c): round(v / chats[1], 1) for c, v in chats.items() if chats.get(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent memory-chat clients per level")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per level")
    parser.add_argument("--delay-ms", type=float, default=DELAY_MS, help="the stub upstream's answer time")
    parser.add_argument("--stream", action="store_true", help="clients stream their memory chats")
    parser.add_argument("--overload-clients", type=int, default=64, help="0: skip the queue-cap run")
    parser.add_argument("--pg-url", default=os.environ.get("MEMSTREAM_TEST_PG_URL"), help="PostgreSQL URL for the 2-process run")
    parser.add_argument("--pg-only", action="store_true", help="only the 2-process PostgreSQL levels and search; writes "
                        "reports/service_load_pg.{json,md} and leaves the full report as it is")
    parser.add_argument("--local", action="store_true", help="also measure search beside a local-model generation")
    parser.add_argument("--note", default="", help="appended to the report's notes (e.g. how loaded the machine was)")
    parser.add_argument("--embedder-runtime", default=EMBEDDER_RUNTIME, help="embedder.runtime of the servers")
    parser.add_argument("--dense-kinds", default="", help="retrieval.dense_kinds of the servers, comma-separated (e.g. turn,fact); "
                        "'' keeps the default (every kind)")
    parser.add_argument("--round-vectors", default="", help="retrieval.round_vectors of the servers (statements or encoded); "
                        "'' keeps the default (statements)")
    parser.add_argument("--report", default="", help="report name under reports/ (default service_load, or service_load_pg)")
    parser.add_argument("--workers-check", default="24:64", help="WORKERS:CLIENTS: one more level with server.chat_workers "
                        "WORKERS (for an upstream as fast as the stub's); '' skips")
    parser.add_argument("--float-clients", default="1,32", help="levels also run with the float runtime (onnx), for comparison; '' skips")
    args = parser.parse_args()
    if args.pg_only and not args.pg_url:
        parser.error("--pg-only needs a PostgreSQL URL (--pg-url or MEMSTREAM_TEST_PG_URL)")
    if args.pg_only and args.local:
        parser.error("--pg-only and --local do not go together: --local belongs to the full report")
    runtime = args.embedder_runtime
    retrieval = retrieval_env(args.dense_kinds, args.round_vectors)
    levels = [int(x) for x in args.levels.split(",") if x]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="memstream-load-") as tmp, StubUpstream(args.delay_ms) as stub:
        tmp = Path(tmp)
        sqlite = not args.pg_only
        if sqlite:
            runs += remote_levels(f"sqlite:///{tmp / 'load.db'}", tmp / "home1", stub.url, levels, args.seconds, args.stream,
                                  runtime=runtime, retrieval=retrieval)
        float_levels = [int(x) for x in args.float_clients.split(",") if x]
        if sqlite and float_levels and args.embedder_runtime != "onnx":
            runs += remote_levels(f"sqlite:///{tmp / 'float.db'}", tmp / "home4", stub.url, float_levels, args.seconds, args.stream,
                                  name="1 process, SQLite, float embedder (onnx)", runtime="onnx", search=False, retrieval=retrieval)
        if sqlite and args.workers_check:
            workers, clients = (int(x) for x in args.workers_check.split(":"))
            env = remote_env(f"sqlite:///{tmp / 'workers.db'}", tmp / "home5", stub.url, f"bench-{uuid.uuid4().hex[:8]}", runtime, retrieval,
                             chat_workers=str(workers))

            def one_level(urls, pids):
                seed_memories(urls[0], KEY, USERS)
                return run_load(urls, KEY, clients, args.seconds, stream=args.stream, search_every=0, pids=pids, seed=False,
                                model="memstream/stub", drain_s=DRAIN_S)

            runs.append({"config": f"1 process, SQLite, chat_workers {workers}", "kind": "memory chat", **_serve(env, 1, one_level)})
            print(f"chat_workers {workers}: {runs[-1]['chat']['rps']} chats/s, p99 {runs[-1]['chat']['p99_ms']} ms", flush=True)
        if sqlite and args.overload_clients:
            runs.append(overload(f"sqlite:///{tmp / 'overload.db'}", tmp / "home2", stub.url, args.overload_clients, args.seconds,
                                 runtime, retrieval))
            print(f"overload: {runs[-1]['chat']['rps']} chats/s, refused {runs[-1]['refused']}, errors {runs[-1]['errors']}", flush=True)
        if args.pg_url:
            runs += remote_levels(args.pg_url, tmp / "home3", stub.url, levels, args.seconds, args.stream, processes=2, runtime=runtime,
                                  retrieval=retrieval,
                                  name="2 processes, PostgreSQL")
    local, local_inline = None, None
    if args.local:
        for model_process in (False, True):
            with tempfile.TemporaryDirectory(prefix="memstream-local-") as tmp:
                result = local_interference(f"sqlite:///{Path(tmp) / 'local.db'}", Path(tmp) / "home", args.seconds, model_process)
            print(f"{result['config']}: search p95 idle {result['idle']['p95_ms']} ms, during generation "
                  f"{result['during_generation']['p95_ms']} ms", flush=True)
            local, local_inline = (result, local_inline) if model_process else (local, result)
    for run in runs:
        run.pop("rss_mb", None)  # the peak is kept; the series would swamp the report
    rows = [{"config": r["config"], "kind": r["kind"], "clients": r["clients"],
             "req/s": (r["search"] if r["kind"] == "memory search" else r["chat"])["rps"],
             "sustained req/s": (r["search"] if r["kind"] == "memory search" else r["chat"])["sustained_rps"],
             "index backlog keys": r.get("index_backlog_keys"), "drain s": r.get("drain_s"),
             **{f"p{q} ms": (r["search"] if r["kind"] == "memory search" else r["chat"])[f"p{q}_ms"] for q in (50, 95, 99)},
             "errors": r["errors"], "429/503": sum(r["refused"].values()), "server CPU ms/req": r.get("server_cpu_ms_per_request"),
             "server cores": r.get("server_cpu_cores_used"), "database CPU ms/req": r.get("database_cpu_ms_per_request"),
             "machine CPU ms/req": r.get("machine_cpu_ms_per_request"),
             "machine cores": r.get("machine_cores_used"), "load client cores": r.get("load_client_cores_used"),
             "RSS MB": r.get("rss_peak_mb")} for r in runs]
    speedup = speedup_over_one(runs, "2 processes, PostgreSQL" if args.pg_only else "1 process, SQLite")
    if args.pg_only:
        notes = (f"The PostgreSQL part of reports/service_load.md on its own: 2 `memstream serve` processes on one PostgreSQL, "
                 f"memory chats through the openai backend on a stub upstream answering after {args.delay_ms:.0f} ms, "
                 f"{args.seconds:.0f} s per level, levels in turn on one growing database, then {SEARCH_CLIENTS} clients "
                 f"searching only. Throughput relative to 1 client: {speedup}. 'machine CPU ms/req' is all the machine's busy "
                 f"time per request (servers, database, stub, load client) on {os.cpu_count()} cores; 'database CPU ms/req' "
                 "the PostgreSQL processes' share of it. "
                 "Rerun: `python benchmarks/service_load.py --pg-only --pg-url URL`.")
    else:
        notes = (f"Memory chats (non-streamed{'; streamed' if args.stream else ''}) through `memstream serve` with the openai "
                 f"backend on a stub upstream answering after {args.delay_ms:.0f} ms (its own process), {args.seconds:.0f} s per "
                 f"level, loopback, SQLite, enrichment off, retrieval.dense_kinds {args.dense_kinds or 'every kind (the default)'}, "
                 f"retrieval.round_vectors {args.round_vectors or 'statements (the default)'}, "
                 f"embedder.runtime {args.embedder_runtime!r} (the float 'onnx' runtime "
                 f"at {args.float_clients or 'no'} clients for comparison). Throughput relative to 1 client: {speedup}. Search: "
                 f"{SEARCH_CLIENTS} clients searching only. Overload: {args.overload_clients} clients against 16 workers + 16 "
                 "queued; 429/503 are refusals (not errors), latency columns are admitted requests. "
                 f"Rerun: `python benchmarks/service_load.py --seconds N{' --dense-kinds ' + args.dense_kinds if args.dense_kinds else ''}"
                 f"{' --round-vectors ' + args.round_vectors if args.round_vectors else ''}{' --report ' + args.report if args.report else ''}`.")
        for result in (local, local_inline):
            if result is not None:
                notes += (f" Local model (SmolLM2-135M on CPU) in {result['config'].rsplit(' in ', 1)[1]}: memory-search p50/p95 "
                          f"{result['idle']['p50_ms']}/{result['idle']['p95_ms']} ms idle vs {result['during_generation']['p50_ms']}/"
                          f"{result['during_generation']['p95_ms']} ms while another client generates 512-token replies "
                          f"(p95 ratio {result['p95_ratio']}).")
        if not args.pg_url:
            notes += " The 2-process PostgreSQL run was skipped: no PostgreSQL URL (--pg-url or MEMSTREAM_TEST_PG_URL)."
        load = os.getloadavg()
        notes += (f" Machine load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on {os.cpu_count()} cores, "
                  "shared with other jobs: 'server cores' is how much CPU the server process got, 'server CPU ms/req' what a "
                  "request cost it.")
    notes += (" 'req/s' counts answers while the clients run; after they stop, each level waits for the servers' background "
              "indexers to embed the keys its writes queued ('index backlog keys' at the stop, 'drain s' to embed them), and "
              "'sustained req/s' divides by both times: what the server holds without falling behind. The CPU and core "
              "columns include the drain.")
    if args.note:
        notes += " " + args.note
    write_report(args.report or ("service_load_pg" if args.pg_only else "service_load"), {"dense_kinds": args.dense_kinds or "every kind", "round_vectors": args.round_vectors or "statements", "levels": levels, "seconds": args.seconds, "delay_ms": args.delay_ms, "speedup": speedup,
                                  "runs": runs, "local_model": local,
                                  "local_model_in_server_process": local_inline}, rows, title="Service load: memory chats with a remote backend", notes=notes)


if __name__ == "__main__":
    main()
