"""Ingest synthetic turns into a fresh SQLite database (no embeddings: a Memory opened with index=False)
and report turns/s and database size. Modes: "batch" is `Memory.ingest` of everything (it commits about
INGEST_BATCH_TURNS turns per transaction); "per_session" is one `Memory.ingest` call, so one transaction,
per session (the crash-safe live default).

    python benchmarks/store_ingest.py [--turns 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

from memstream.config import load_settings  # noqa: E402
from memstream.memory import open_memory  # noqa: E402
from memstream.memory.core import INGEST_BATCH_TURNS  # noqa: E402
from memstream.memory.model import NewSession, NewTurn  # noqa: E402

WORDS = "the a my we went to park dinner trip work job sister painted race charity school moved city dog cat book music".split()


def synthetic_sessions(total_turns: int, per_session: int, seed: int = 0) -> list[NewSession]:
    rng = random.Random(seed)
    start = datetime(2023, 1, 1)
    sessions = []
    for s in range(total_turns // per_session):
        when = start + timedelta(hours=6 * s)
        turns = [
            NewTurn("user" if t % 2 == 0 else "assistant", " ".join(rng.choices(WORDS, k=rng.randint(8, 30))), None, when + timedelta(seconds=t), {"source_id": f"D{s}:{t}"})
            for t in range(per_session)
        ]
        sessions.append(NewSession(f"conv-{s % 50}", turns, when, external_id=f"s{s}"))
    return sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--per-session", type=int, default=20)
    args = parser.parse_args()
    sessions = synthetic_sessions(args.turns, args.per_session)
    results = {}
    rows = []
    for mode in ("batch", "per_session"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            memory = open_memory(load_settings(db_url=f"sqlite:///{path}", home=tmp), index=False)
            started = time.perf_counter()
            if mode == "batch":
                memory.ingest("bench", sessions)  # INGEST_BATCH_TURNS turns per transaction
            else:
                for session in sessions:  # one transaction per session: the crash-safe default
                    memory.ingest("bench", [session])
            elapsed = time.perf_counter() - started
            count = memory.count_turns("bench")
            size = sum(p.stat().st_size for p in path.parent.glob("bench.db*"))
            memory.close()
            results[mode] = {"turns": count, "seconds": round(elapsed, 3), "turns_per_s": round(count / elapsed), "database_bytes": size}
            rows.append({"mode": mode, "turns": count, "seconds": elapsed, "turns/s": count / elapsed, "db MB": size / 1e6})
            print(mode, results[mode])
    write_report("store_ingest", {"results": results, "batch_turns": INGEST_BATCH_TURNS, "target_turns_per_s": 20_000}, rows,
                 "Store ingest (SQLite WAL, no embeddings)")


if __name__ == "__main__":
    main()
