"""Why the server sets a short GIL switch interval: concurrent memory writes beside threads busy in Python.

SQLite has one writer at a time, so MemoryStore serialises this process's writes on its writer lock. A write is a
dozen SQLite calls (BEGIN IMMEDIATE, the session and position reads, the insert, COMMIT), and the sqlite3 driver
lets the GIL go around each. When another thread is running Python, getting the GIL back waits until that thread
is made to give it up: up to the switch interval (sys.setswitchinterval, 5 ms by default). The writer lock is held
through every such wait, so the writes queue behind each other. In the server the busy threads are the other
requests' Python (prompt building, ranking, the HTTP layer) and the indexer's.

Each configuration runs `--writers` threads appending one turn each to a fresh SQLite store as fast as they can,
beside `--busy` threads spinning in pure Python, for `--seconds`; per switch interval: adds/s, p50 and p99 latency.
Writes reports/gil_writes.{json,md}.

    python benchmarks/gil_writes.py [--writers 8] [--busy 0,2] [--intervals-ms 5,1,0.5,0.2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import write_report  # noqa: E402

from memstream.memory.model import NewTurn  # noqa: E402
from memstream.memory.store import MemoryStore  # noqa: E402

USERS = 64


def run(writers: int, busy: int, interval_ms: float, seconds: float) -> dict:
    """One configuration on a fresh database; the switch interval is restored afterwards."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval_ms / 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp, MemoryStore(f"sqlite:///{Path(tmp) / 'writes.db'}") as store:
            for u in range(USERS):
                store.add_turns(f"user{u}", "chat", [NewTurn("user", "a first turn")])
            latencies: list[float] = []
            lock = threading.Lock()
            deadline = time.monotonic() + seconds

            def write(k: int) -> None:
                i = 0
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    user = f"user{(k * 7 + i) % USERS}"
                    store.add_turns(user, "chat", [NewTurn("user", f"When did I take up climbing? Request {i} of writer {k}.")])
                    with lock:
                        latencies.append(time.perf_counter() - started)
                    i += 1

            def spin() -> None:
                x = 0
                while time.monotonic() < deadline:
                    for j in range(1000):
                        x += j

            threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
            threads += [threading.Thread(target=spin) for _ in range(busy)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(previous)
    latencies.sort()
    n = len(latencies)
    return {"writers": writers, "busy threads": busy, "switch interval ms": interval_ms, "adds": n,
            "adds/s": round(n / seconds, 1), "p50 ms": round(1000 * latencies[n // 2], 2) if n else None,
            "p99 ms": round(1000 * latencies[min(n - 1, int(n * 0.99))], 2) if n else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--busy", default="0,2", help="busy Python threads beside the writers, per configuration")
    parser.add_argument("--intervals-ms", default="5,1,0.5,0.2", help="switch intervals to compare (Python's default: 5)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--report", default="gil_writes")
    args = parser.parse_args()
    if args.writers < 1 or args.seconds <= 0:
        parser.error("--writers must be at least 1 and --seconds positive")
    rows = []
    for busy in (int(b) for b in args.busy.split(",")):
        for interval in (float(i) for i in args.intervals_ms.split(",")):
            row = run(args.writers, busy, interval, args.seconds)
            print(row, flush=True)
            rows.append(row)
    notes = (f"{args.writers} threads each appending one turn at a time to a fresh SQLite store (MemoryStore.add_turns), "
             f"beside 0 or more threads spinning in pure Python, {args.seconds:g} s per configuration. The server sets "
             "server.switch_interval_ms (0.5 by default). Rerun: `python benchmarks/gil_writes.py`.")
    write_report(args.report, {"rows": rows}, rows, title="Memory writes beside busy Python threads, by GIL switch interval", notes=notes)


if __name__ == "__main__":
    main()
