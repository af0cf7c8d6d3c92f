"""HTTP load on `memstream serve`: N concurrent clients doing memory-augmented chat and memory search
on loopback, against 1 server process (SQLite) and 2 processes on one PostgreSQL database.
Reports requests/s, p50/p95/p99 latency and errors to reports/service_load.json (+ .md).

    python benchmarks/service_load.py [--clients 8] [--seconds 20] [--pg-url postgresql+psycopg://...]

The chat backend is the scripted one (no model time), so the numbers are the service's own cost:
HTTP, auth, storing each turn, index catch-up, retrieval (embedding the query), prompt building.
Without --pg-url (or MEMSTREAM_TEST_PG_URL) the 2-process run is skipped. The PostgreSQL database
is not wiped: each run writes under its own tenant.

Other scripts can drive load on servers they started: `run_load(urls, api_key, clients, seconds,
stream=True, pids=[...])` returns the same numbers plus the servers' RSS over time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

from memstream.server.app import is_loopback  # noqa: E402
from memstream.server.process import ServerProcess, server_env  # noqa: E402

CLIENTS = 8
SECONDS = 20.0
MAX_CLIENTS = 64
MAX_SECONDS = 300.0
USERS = 8
KEY = "bench-key-" + "0" * 12
TOPICS = "hiking cello sourdough chess kayaking pottery astronomy gardening salsa climbing".split()


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"chat": [], "search": []})
    first_piece: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


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


def seed_memories(url: str, api_key: str | None, users: int) -> None:
    """A few remembered facts per user, so searches and chats have something to find."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    for u in range(users):
        turns = [{"role": "user", "text": f"I took up {topic} in {2015 + i}."} for i, topic in enumerate(TOPICS)]
        response = httpx.post(f"{url}/v1/memories", json={"user": f"user{u}", "conversation": "seed", "turns": turns},
                              headers=headers, timeout=120)
        response.raise_for_status()


def _client(index: int, urls: list[str], api_key: str | None, deadline: float, stop_after: int | None, stream: bool,
            search_every: int, users: int, samples: Samples) -> None:
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    user = f"user{index % users}"
    done = 0
    with httpx.Client(headers=headers, timeout=120) as http:
        while time.monotonic() < deadline and (stop_after is None or done < stop_after):
            url = urls[(index + done) % len(urls)]  # round-robin, as a load balancer would
            topic = rng.choice(TOPICS)
            started = time.perf_counter()
            try:
                if search_every and done % search_every == search_every - 1:
                    response = http.post(f"{url}/v1/memories/search", json={"user": user, "query": f"when did I start {topic}?", "k": 5})
                    response.raise_for_status()
                    samples.add("search", time.perf_counter() - started)
                else:
                    body = {"model": "memstream/scripted", "user": user, "stream": stream, "max_tokens": 32,
                            "messages": [{"role": "user", "content": f"When did I take up {topic}?"}]}
                    chat_headers = {"X-Memstream-Conversation": f"c{index}"}
                    if stream:
                        with http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=chat_headers) as response:
                            response.raise_for_status()
                            first = None
                            for line in response.iter_lines():
                                if first is None and '"content": "' in line and '"content": ""' not in line:
                                    first = time.perf_counter() - started
                                if line.startswith('data: {"error"'):
                                    raise RuntimeError(line[6:200])
                            if first is not None:
                                with samples.lock:
                                    samples.first_piece.append(first)
                    else:
                        http.post(f"{url}/v1/chat/completions", json=body, headers=chat_headers).raise_for_status()
                    samples.add("chat", time.perf_counter() - started)
            except (httpx.HTTPError, RuntimeError) as exc:
                samples.error(f"{type(exc).__name__}: {str(exc)[:200]}")
            done += 1


def run_load(urls: list[str], api_key: str | None, clients: int = CLIENTS, seconds: float = SECONDS, *, stream: bool = True,
             search_every: int = 2, users: int = USERS, max_requests_per_client: int | None = None,
             pids: list[int] | None = None, rss_every_s: float = 1.0, seed: bool = True) -> dict:
    """Drive `clients` concurrent clients for `seconds` against memstream servers at `urls` (loopback only).

    Each client alternates memory chat (streamed when `stream`) with memory search (every
    `search_every`-th request; 0: chat only) as one of `users` users, spreading requests over the urls.
    `pids`: server processes whose RSS is sampled every `rss_every_s` (memory growth under load).
    Returns requests/s, p50/p95/p99 per kind (ms), time to first streamed piece, errors, RSS samples.
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
        seed_memories(urls[0], api_key, users)
    samples = Samples()
    rss: list[tuple[float, list[float | None]]] = []
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=_client, args=(i, urls, api_key, deadline, max_requests_per_client, stream, search_every, users, samples))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if pids:
            rss.append((round(time.monotonic() - start, 2), [rss_mb(pid) for pid in pids]))
        for thread in threads:
            thread.join(timeout=rss_every_s / max(1, len(threads)))
    elapsed = time.monotonic() - start
    result: dict = {"clients": clients, "seconds": round(elapsed, 2), "servers": len(urls), "stream": stream}
    total = 0
    for kind, values in samples.latencies.items():
        total += len(values)
        result[kind] = {"requests": len(values), "rps": round(len(values) / elapsed, 2),
                        **{f"p{int(q * 100)}_ms": None if percentile(values, q) is None else round(percentile(values, q) * 1000, 1)
                           for q in (0.5, 0.95, 0.99)}}
    every = samples.latencies["chat"] + samples.latencies["search"]
    result.update({
        "requests": total, "rps": round(total / elapsed, 2), "errors": len(samples.errors), "error_examples": samples.errors[:5],
        **{f"p{int(q * 100)}_ms": None if percentile(every, q) is None else round(percentile(every, q) * 1000, 1) for q in (0.5, 0.95, 0.99)},
        "first_piece_p50_ms": None if not samples.first_piece else round(percentile(samples.first_piece, 0.5) * 1000, 1),
    })
    if pids:
        result["rss_mb"] = rss
    return result


def _run_config(name: str, db_url: str, processes: int, clients: int, seconds: float, home: Path) -> dict:
    env = server_env(db_url, home, {KEY: f"bench-{uuid.uuid4().hex[:8]}"}, index_refresh_s=1.0, MEMSTREAM_AGENT__ENRICH="false")
    servers = [ServerProcess(env).launch() for _ in range(processes)]
    try:
        for server in servers:
            server.wait_ready(300)
        result = run_load([s.url for s in servers], KEY, clients, seconds, pids=[s.proc.pid for s in servers])
    finally:
        for server in servers:
            server.stop()
    return {"config": name, "processes": processes, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--pg-url", default=os.environ.get("MEMSTREAM_TEST_PG_URL"), help="PostgreSQL URL for the 2-process run")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="memstream-load-") as tmp:
        runs.append(_run_config("1 process, SQLite", f"sqlite:///{Path(tmp) / 'load.db'}", 1, args.clients, args.seconds, Path(tmp) / "home1"))
        print(runs[-1]["config"], runs[-1]["rps"], "req/s", runs[-1]["errors"], "errors", flush=True)
        if args.pg_url:
            runs.append(_run_config("1 process, PostgreSQL", args.pg_url, 1, args.clients, args.seconds, Path(tmp) / "home2"))
            print(runs[-1]["config"], runs[-1]["rps"], "req/s", runs[-1]["errors"], "errors", flush=True)
            runs.append(_run_config("2 processes, PostgreSQL", args.pg_url, 2, args.clients, args.seconds, Path(tmp) / "home3"))
            print(runs[-1]["config"], runs[-1]["rps"], "req/s", runs[-1]["errors"], "errors", flush=True)
    rows = [{"config": r["config"], "clients": r["clients"], "requests": r["requests"], "req/s": r["rps"],
             "p50 ms": r["p50_ms"], "p95 ms": r["p95_ms"], "p99 ms": r["p99_ms"],
             "chat p50/p95 ms": f"{r['chat']['p50_ms']} / {r['chat']['p95_ms']}",
             "search p50/p95 ms": f"{r['search']['p50_ms']} / {r['search']['p95_ms']}",
             "first piece p50 ms": r["first_piece_p50_ms"], "errors": r["errors"]} for r in runs]
    notes = (f"{args.clients} concurrent clients for {args.seconds:.0f}s each, loopback; each alternates a streamed "
             "memory-augmented chat (scripted backend: no model time) and a memory search. Memory chats run one at a "
             "time per process (the generation worker), searches concurrently.")
    if not args.pg_url:
        notes += " The 2-process run was skipped: no PostgreSQL URL (--pg-url or MEMSTREAM_TEST_PG_URL)."
    write_report("service_load", {"clients": args.clients, "seconds": args.seconds, "runs": runs}, rows,
                 title="Service load: memory chat + search over HTTP", notes=notes)


if __name__ == "__main__":
    main()
