"""Where block_topk's decode time goes: its launches timed alone and in each fused/unfused combination.

Same shapes and budget as benchmarks/attention_kernels.py (Llama-3-8B heads, bf16, 128-token blocks, 4 sinks +
24 blocks + 1024-token window, 4 representatives per block). Each figure is a CUDA-graph replay.
Writes reports/block_topk_variants.{json,md}. Needs a CUDA GPU.

    python benchmarks/block_topk_variants.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.attention_kernels import POLICY_PARAMS, paged_cache, graph_ms  # noqa: E402
from memstream.backends.kernels import block_topk as bt  # noqa: E402
from memstream.backends.kernels.dense import alloc_partials, reduce_splits  # noqa: E402

CONTEXTS = [32768, 131072, 524288]
BATCHES = [1, 8]


def variants(q, k, v, table, lens, reps, p):
    block = k.shape[2]
    scores = bt._launch_scores(q, reps, table, lens, p.sinks, p.window, block)
    selected = bt._launch_select(scores, p.topk)
    n_splits_args = (q, k, v, table, lens, selected, p.sinks, p.window, None, None, 64)
    batch, n_heads, head_dim = q.shape
    m, l, acc = alloc_partials(batch, n_heads, 66, head_dim, q.device)
    out = torch.empty_like(q)

    def four_launches():
        s = bt._launch_scores(q, reps, table, lens, p.sinks, p.window, block)
        return bt._launch_attention(q, k, v, table, lens, bt._launch_select(s, p.topk), p.sinks, p.window, None, None, 64,
                                    fused_reduce=False)

    def fused_reduce_only():
        s = bt._launch_scores(q, reps, table, lens, p.sinks, p.window, block)
        return bt._launch_attention(q, k, v, table, lens, bt._launch_select(s, p.topk), p.sinks, p.window, None, None, 64,
                                    fused_reduce=True)

    return {
        "score alone": lambda: bt._launch_scores(q, reps, table, lens, p.sinks, p.window, block),
        "select alone": lambda: bt._launch_select(scores, p.topk),
        "attention alone (no reduce)": lambda: bt._launch_attention(*n_splits_args, fused_reduce=False),
        "attention + fused reduce": lambda: bt._launch_attention(*n_splits_args, fused_reduce=True),
        "reduce alone (66 splits)": lambda: reduce_splits(m, l, acc, out),
        "4 launches": four_launches,
        "3 launches (fused reduce)": fused_reduce_only,
        "default (block_topk_attention)": lambda: bt.block_topk_attention(q, k, v, table, lens, reps, p.sinks, p.window, p.topk,
                                                                          check=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args()
    device = torch.device("cuda")
    p = POLICY_PARAMS["block_topk"]
    rows = []
    for batch in BATCHES:
        for context in CONTEXTS:
            q, k, v, table, lens = paged_cache(batch, context, torch.bfloat16, device)
            reps = bt.build_representatives(k, table, lens, p.representatives)
            for name, fn in variants(q, k, v, table, lens, reps, p).items():
                ms, error = graph_ms(fn, device, 3)
                rows.append({"batch": batch, "context": context, "variant": name, "graph_us": None if ms is None else round(ms * 1000, 1),
                             "error": error})
                print(batch, context, name, rows[-1]["graph_us"], error or "", flush=True)
            del q, k, v, table, lens, reps
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(device), "params": p.__dict__, "rows": rows}
    (args.out / "block_topk_variants.json").write_text(json.dumps(meta, indent=2) + "\n")
    names = list(dict.fromkeys(r["variant"] for r in rows))
    keys = [(b, c) for b in BATCHES for c in CONTEXTS]
    lines = [f"# block_topk launch variants (CUDA-graph replay, us) on {meta['device']}", "",
             "Rerun: `python benchmarks/block_topk_variants.py`.", "",
             "| variant | " + " | ".join(f"b{b} {c // 1024}K" for b, c in keys) + " |", "|---|" + "---:|" * len(keys)]
    for name in names:
        cells = {(r["batch"], r["context"]): r["graph_us"] for r in rows if r["variant"] == name}
        lines.append(f"| {name} | " + " | ".join(str(cells.get(key)) for key in keys) + " |")
    (args.out / "block_topk_variants.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
