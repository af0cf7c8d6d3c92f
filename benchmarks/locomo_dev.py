"""The LoCoMo dev-set run (not in CI): memstream vs full-context vs hybrid with the default local model.

Writes the run under runs/locomo_dev/ (resumable: rerun the same command to continue) and copies
its report.md, results.json and plots to reports/locomo_dev/.

    python benchmarks/locomo_dev.py                      # all 999 questions
    python benchmarks/locomo_dev.py --per-conversation 8 # a subset covering all five conversations
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from memstream.benchmarks.commands import full_run, summary_lines

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo10_dev.json"
SYSTEMS = ["memstream", "full-context", "hybrid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "locomo_dev")
    parser.add_argument("--per-conversation", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--backend", default=None)
    args = parser.parse_args()
    results = full_run("locomo", args.data, args.out, systems=SYSTEMS, limit=args.limit, per_history=args.per_conversation,
                       backend=args.backend, resume=True)
    target = ROOT / "reports" / "locomo_dev"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.json", "per_category.png", "accuracy_vs_tokens.png"):
        if (args.out / name).exists():
            shutil.copy(args.out / name, target / name)
    print("\n".join(summary_lines(results)))


if __name__ == "__main__":
    main()
