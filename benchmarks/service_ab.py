"""Two versions of memstream under the same HTTP load, side by side: the servers of one run start from this source
tree, those of the other from `--base` (a checkout of the commit to compare with, e.g. `git worktree add DIR REV`),
and the runs alternate `--rounds` times. This machine's speed swings by 20-30% within an hour, so figures taken an
hour apart (two reports/service_load.md) cannot tell a 10% change; alternating runs minutes apart can.

    git worktree add ../base <commit>
    python benchmarks/service_ab.py --base ../base --levels 32,64 --seconds 30 --rounds 2 [--search]

Each run is benchmarks/service_load.py's: a fresh SQLite database, the stub upstream answering after 300 ms,
memory chats from N clients per level (then, with --search, 8 clients searching). Writes reports/service_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
import service_load as load  # noqa: E402
from _report import write_report  # noqa: E402

HERE = Path(__file__).resolve().parents[1]


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return (done.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="source tree of the version to compare with")
    parser.add_argument("--levels", default="32,64", help="concurrent memory-chat clients per level")
    parser.add_argument("--seconds", type=float, default=30.0, help="per level")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each version, alternating")
    parser.add_argument("--search", action="store_true", help="also 8 clients searching, after the chat levels")
    parser.add_argument("--report", default="service_ab")
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "memstream" / "__init__.py").exists():
        parser.error(f"--base must be a source tree of memstream (a checkout with memstream/ in it), not {args.base}")
    levels = [int(n) for n in args.levels.split(",")]
    versions = {"base": (base, commit_of(base)), "this": (HERE, commit_of(HERE))}
    rows = []
    with load.StubUpstream(load.DELAY_MS) as stub:
        for round_no in range(args.rounds):
            for version, (tree, commit) in versions.items():
                with tempfile.TemporaryDirectory() as tmp:
                    runs = load.remote_levels(f"sqlite:///{Path(tmp) / 'load.db'}", Path(tmp) / "home", stub.url, levels,
                                              args.seconds, False, search=args.search, source=tree)
                for run in runs:
                    kind = "search" if run["kind"] == "memory search" else "chat"
                    rows.append({"version": version, "commit": commit, "round": round_no + 1, "kind": run["kind"],
                                 "clients": run["clients"], "req/s": run[kind]["rps"], "sustained req/s": run[kind]["sustained_rps"],
                                 "p50 ms": run[kind]["p50_ms"], "p99 ms": run[kind]["p99_ms"], "errors": run["errors"],
                                 "server CPU ms/req": run.get("server_cpu_ms_per_request"), "server cores": run.get("server_cpu_cores_used")})
    summary = []
    for kind, clients in dict.fromkeys((r["kind"], r["clients"]) for r in rows):
        line = {"kind": kind, "clients": clients}
        for version in versions:
            mine = [r for r in rows if r["version"] == version and r["kind"] == kind and r["clients"] == clients]
            line[f"{version} sustained req/s"] = round(statistics.mean(r["sustained req/s"] for r in mine), 2)
            cpu = [r["server CPU ms/req"] for r in mine if r["server CPU ms/req"] is not None]
            line[f"{version} server CPU ms/req"] = round(statistics.mean(cpu), 1) if cpu else None
        summary.append(line)
    notes = (f"base: {versions['base'][1]}; this: {versions['this'][1]}. {args.rounds} rounds, base then this in each, "
             f"{args.seconds:g} s per level, SQLite, the stub upstream at {load.DELAY_MS:g} ms. Means per version: "
             + "; ".join(f"{s['kind']} {s['clients']} clients: {s['base sustained req/s']} -> {s['this sustained req/s']} req/s, "
                         f"server CPU {s['base server CPU ms/req']} -> {s['this server CPU ms/req']} ms/req" for s in summary)
             + f". Rerun: `python benchmarks/service_ab.py --base DIR --levels {args.levels} --seconds {args.seconds:g} "
               f"--rounds {args.rounds}{' --search' if args.search else ''}`.")
    write_report(args.report, {"versions": {v: c for v, (_t, c) in versions.items()}, "levels": levels, "seconds": args.seconds,
                               "summary": summary, "runs": rows}, rows, title="Service load, two versions side by side", notes=notes)
    print(notes)


if __name__ == "__main__":
    main()
