"""The load generator of the service benchmarks: client threads on keep-alive connections asking memory chats and
searches of `memstream serve` for a while, and what they measure (latency percentiles, refusals, errors, the
servers' CPU and RSS, the machine's busy time, the indexers' backlog and how long it takes to drain).

`run_load(urls, api_key, clients, seconds, ...)` is the client loop: service_load.py, service_ab.py and
reliability.py drive it. Kept apart from the scenarios (service_load.py), which start the servers and write reports.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from memstream.server.app import is_loopback

MAX_CLIENTS = 256
MAX_SECONDS = 600.0
USERS = 64
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
