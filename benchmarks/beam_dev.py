"""The BEAM dev run (not in CI): evidence recall@5/@10 per ability for memstream, hybrid, BM25 and dense on the
five BEAM 100K chats beside the project, with token counts; retrieval only unless --judge-model is given.

Writes the run under runs/beam_dev/ and copies report.md, results.json and per_question.jsonl to reports/beam_dev/.

    python benchmarks/beam_dev.py                         # retrieval only (MiniLM; the answer model's tokenizer counts tokens)
    python benchmarks/beam_dev.py --judge-model NAME      # also answers, judged item by item on each rubric
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from memstream.benchmarks.commands import beam_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "beam" / "chats" / "100K"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "beam_dev")
    parser.add_argument("--judge-backend", default=None)
    parser.add_argument("--judge-model", default=None)
    args = parser.parse_args()
    results = beam_run(args.data, args.out, judge_backend=args.judge_backend, judge_model=args.judge_model, progress=print)
    target = ROOT / "reports" / "beam_dev"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.json", "per_question.jsonl"):
        shutil.copy(args.out / name, target / name)
    for name, summary in results["systems"].items():
        print(f"{name:<10} recall_any@5 {summary['recall_any@5']}  recall_any@10 {summary['recall_any@10']}")


if __name__ == "__main__":
    main()
