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

`run_load(urls, api_key, clients, seconds, ...)` is the client loop (reliability.py drives it too).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from _report import write_report  # noqa: E402

from memstream.server.app import is_loopback  # noqa: E402
from memstream.server.process import ServerProcess, free_port, server_env  # noqa: E402

LEVELS = (1, 8, 32, 64)
SECONDS = 60.0
SEARCH_CLIENTS = 8
DELAY_MS = 300.0
MAX_CLIENTS = 256
MAX_SECONDS = 600.0
USERS = 64
KEY = "bench-key-" + "0" * 12
TOPICS = "hiking cello sourdough chess kayaking pottery astronomy gardening salsa climbing".split()
REFUSED = (429, 503)
DRAIN_S = 600.0
"""How long a level may wait, after its clients stop, for the background indexers to catch up."""


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"chat": [], "search": []})
    first_piece: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    refused_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def refuse(self, status: int, seconds: float) -> None:
        with self.lock:
            self.refused[status] = self.refused.get(status, 0) + 1
            self.refused_ms.append(seconds * 1000)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | str, children: bool = False) -> float | None:
    """User + system CPU time a process has used (Linux /proc; None elsewhere); `children`: plus that of its exited
    children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def seed_memories(url: str, api_key: str | None, users: int) -> None:
    """A few remembered facts per user, so searches and chats have something to find."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=300) as http:
        for u in range(users):
            turns = [{"role": "user", "text": f"I took up {topic} in {2015 + i}."} for i, topic in enumerate(TOPICS)]
            response = http.post(f"{url}/v1/memories", json={"user": f"user{u}", "conversation": "seed", "turns": turns})
            response.raise_for_status()
    wait_for_indexers([url], DRAIN_S)  # the first level must not pay for embedding the seed


class LoadConnection:
    """One client's keep-alive HTTP/1.1 connection (stdlib http.client): the load generator shares the 2 cores with the
    server it measures, and httpx cost it about 20 ms of CPU per request at 64 threads, as much as the server's work."""

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float = 120.0):
        parsed = urlparse(url)
        self.host, self.port, self.timeout_s = parsed.hostname, parsed.port, timeout_s
        self.headers = {"Content-Type": "application/json", **headers}
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        """Send; the caller reads the response (all of it, so the connection can carry the next request)."""
        payload = json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self.conn.request("POST", path, payload, {**self.headers, **(headers or {})})
                return self.conn.getresponse()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                self.close()  # the server closed an idle keep-alive connection: once more on a new one
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _client(index: int, urls: list[str], api_key: str | None, deadline: float, stop_after: int | None, stream: bool,
            search_every: int, users: int, model: str, samples: Samples) -> None:
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    user = f"user{index % users}"
    done = 0
    connections = [LoadConnection(url, headers) for url in urls]
    try:
        while time.monotonic() < deadline and (stop_after is None or done < stop_after):
            http_conn = connections[(index + done) % len(urls)]  # round-robin, as a load balancer would
            topic = rng.choice(TOPICS)
            started = time.perf_counter()
            try:
                if search_every and done % search_every == search_every - 1:
                    kind = "search"
                    # Every query and question is a text of its own, as real traffic is: repeated texts would hit the
                    # query-vector cache and be embedded once per indexer batch, and flatter the figures.
                    query = f"when did I start {topic}? request {done} of client {index}"
                    response = http_conn.post("/v1/memories/search", {"user": user, "query": query, "k": 5})
                    text = response.read().decode()
                else:
                    kind = "chat"
                    body = {"model": model, "user": user, "stream": stream, "max_tokens": 32,
                            "messages": [{"role": "user", "content": f"When did I take up {topic}? This is request {done} of client {index}."}]}
                    response = http_conn.post("/v1/chat/completions", body, {"X-Memstream-Conversation": f"c{index}"})
                    if stream and response.status == 200:
                        first = None
                        for raw in response:
                            line = raw.decode().rstrip("\n")
                            if first is None and '"content": "' in line and '"content": ""' not in line:
                                first = time.perf_counter() - started
                            if line.startswith('data: {"error"'):
                                raise RuntimeError(line[6:200])
                        if first is not None:
                            with samples.lock:
                                samples.first_piece.append(first)
                        text = ""
                    else:
                        text = response.read().decode()
                elapsed = time.perf_counter() - started
                if response.status in REFUSED:
                    samples.refuse(response.status, elapsed)
                    time.sleep(min(2.0, float(response.getheader("retry-after") or "1")) * rng.uniform(0.5, 1.0))
                elif response.status >= 400:
                    samples.error(f"HTTP {response.status}: {text[:200]}")
                else:
                    samples.add(kind, elapsed)
                if response.will_close:
                    http_conn.close()
            except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
                http_conn.close()
                samples.error(f"{type(exc).__name__}: {str(exc)[:200]}")
            done += 1
    finally:
        for connection in connections:
            connection.close()


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy, all cores (Linux /proc/stat; None elsewhere): it counts what no pid
    list can, such as a database's per-connection processes that exit during the run."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds() -> float | None:
    """CPU time of the PostgreSQL processes on this machine (server and per-connection backends, by process name;
    Linux /proc; None elsewhere): the database's share of the machine's work. A backend that exited (a pool's overflow
    connection) is counted through its parent's children's time (cutime, cstime)."""
    total, found = 0.0, False
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for pid in entries:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue  # exited meanwhile
        used = cpu_seconds(pid, children=True)
        if used is not None:
            total, found = total + used, True
    return total if found else None


def run_load(urls: list[str], api_key: str | None, clients: int = 8, seconds: float = 20.0, *, stream: bool = True,
             search_every: int = 2, users: int = USERS, max_requests_per_client: int | None = None,
             pids: list[int] | None = None, rss_every_s: float = 1.0, seed: bool = True, model: str = "memstream/scripted",
             database: bool = False, drain_s: float = 0.0) -> dict:
    """Drive `clients` concurrent clients for `seconds` against memstream servers at `urls` (loopback only).

    Each client alternates memory chat (streamed when `stream`) with memory search (every
    `search_every`-th request; 0: chat only; 1: search only) as one of `users` users, spreading requests
    over the urls. `pids`: server processes whose RSS is sampled every `rss_every_s`. `database`: also report the
    PostgreSQL processes' CPU per request. `drain_s`: after the clients stop, wait up to this long for the servers'
    background indexers to embed what the load queued, and count that time and CPU as the load's: a level whose
    writes outrun the indexer is not sustainable, and its figures must not leave the indexing to the next level.
    Returns requests/s, p50/p95/p99 per kind (ms) of answered requests, refusals (429/503) apart from
    errors (any other failure), time to first streamed piece, RSS samples.
    """
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS}, got {clients}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}], got {seconds}")
    for url in urls:
        host = urlparse(url).hostname or ""
        if not is_loopback(host):
            raise ValueError(f"load is only sent to loopback servers, not {url}")
    if seed:
        seed_memories(urls[0], api_key, min(users, clients))
    samples = Samples()
    rss: list[tuple[float, list[float | None]]] = []
    cpu_before = [cpu_seconds(pid) for pid in pids or []]
    own_cpu_before = time.process_time()
    machine_before = machine_busy_seconds()
    database_before = database_cpu_seconds() if database else None
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=_client, args=(i, urls, api_key, deadline, max_requests_per_client, stream, search_every,
                                                      users, model, samples)) for i in range(clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if pids:
            rss.append((round(time.monotonic() - start, 2), [rss_mb(pid) for pid in pids]))
        for thread in threads:
            thread.join(timeout=rss_every_s / max(1, len(threads)))
    elapsed = time.monotonic() - start
    backlog, drained = index_backlog(urls), 0.0
    if drain_s > 0 and backlog:
        drained = wait_for_indexers(urls, drain_s)
    busy = elapsed + drained  # the load's time plus the indexing it left behind
    own_cpu = time.process_time() - own_cpu_before
    machine_after = machine_busy_seconds()
    database_after = database_cpu_seconds() if database else None
    result: dict = {"clients": clients, "seconds": round(elapsed, 2), "servers": len(urls), "stream": stream,
                    "load_client_cores_used": round(own_cpu / elapsed, 2), "index_backlog_keys": backlog,
                    "drain_s": round(drained, 2)}
    total = 0
    for kind, values in samples.latencies.items():
        total += len(values)
        result[kind] = {"requests": len(values), "rps": round(len(values) / elapsed, 2), "sustained_rps": round(len(values) / busy, 2),
                        **{f"p{int(q * 100)}_ms": None if percentile(values, q) is None else round(percentile(values, q) * 1000, 1)
                           for q in (0.5, 0.95, 0.99)}}
    every = samples.latencies["chat"] + samples.latencies["search"]
    result.update({
        "requests": total, "rps": round(total / elapsed, 2), "errors": len(samples.errors), "error_examples": samples.errors[:5],
        "refused": {str(k): v for k, v in sorted(samples.refused.items())},
        "refused_p99_ms": None if not samples.refused_ms else round(percentile(samples.refused_ms, 0.99), 1),
        **{f"p{int(q * 100)}_ms": None if percentile(every, q) is None else round(percentile(every, q) * 1000, 1) for q in (0.5, 0.95, 0.99)},
        "first_piece_p50_ms": None if not samples.first_piece else round(percentile(samples.first_piece, 0.5) * 1000, 1),
    })
    if total and machine_before is not None and machine_after is not None:
        # Everything the machine did per request: the servers, the database, the stub upstream, this load client,
        # and any other job on it. Against the core count it says whether the machine was the limit.
        result["machine_cpu_ms_per_request"] = round((machine_after - machine_before) * 1000 / total, 1)
        result["machine_cores_used"] = round((machine_after - machine_before) / busy, 2)
    if total and database_before is not None and database_after is not None:
        result["database_cpu_ms_per_request"] = round((database_after - database_before) * 1000 / total, 1)
    if pids:
        used = [None if a is None or b is None else b - a for a, b in zip(cpu_before, (cpu_seconds(pid) for pid in pids))]
        if total and all(u is not None for u in used):
            # What a request costs the server processes in CPU, whatever else the machine runs.
            result["server_cpu_ms_per_request"] = round(sum(used) * 1000 / total, 1)
            result["server_cpu_cores_used"] = round(sum(used) / busy, 2)
        result["rss_mb"] = rss
        sampled = [mb[0] for _, mb in rss if mb and mb[0] is not None]
        result["rss_peak_mb"] = round(max(sampled), 1) if sampled else None
    return result


def index_backlog(urls: list[str]) -> int | None:
    """Dense keys the servers' background indexers still have to embed (their /ready), summed; None if unknown."""
    total = 0
    for url in urls:
        try:
            index = httpx.get(f"{url}/ready", timeout=30).json().get("index") or {}
        except (httpx.HTTPError, ValueError):
            return None
        if index.get("pending_keys") is None:
            return None
        total += int(index["pending_keys"])
    return total


def wait_for_indexers(urls: list[str], limit_s: float) -> float:
    """Seconds until every server's indexer has caught up (at most `limit_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s and index_backlog(urls):
        time.sleep(0.25)
    return time.monotonic() - started


# -- servers --------------------------------------------------------------------------------------


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
