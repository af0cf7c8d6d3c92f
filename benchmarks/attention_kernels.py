"""Time one decode-attention call per policy vs context length; write reports/kernels.{json,md,png}.

Shapes follow Llama-3-8B: 32 query heads, 8 KV heads, head dim 128, bf16, 128-token cache
blocks. Every sparse policy gets the same ~4K-token budget:
  sink_window  4 sinks + 4092-token window
  block_topk   4 sinks + 24 blocks x 128 + 1024-token window (+ scoring every block's 4 representatives)
  snapkv       dense over a 4096-token compressed cache (its compression runs once, after prefill)
Baselines: the dense split-K kernel, and torch SDPA over a contiguous (not paged) copy of the cache.

Bandwidth = bytes the policy must read (K and V rows attended, plus representatives for
block_topk) / time. On a GPU this is the achieved HBM bandwidth.

Two times per point on a GPU: `plain`, one eager call (inputs validated once before timing,
then `check=False`; the Python and launch overhead of each kernel launch is included), and
`graph`, a replay of the same call captured in a torch.cuda.CUDAGraph (what a decode loop
captured once per step shape pays: kernel time and in-graph gaps only). Bandwidth and
speedups are computed from the graph times where present. Both use triton's do_bench, which
clears the L2 cache before each run.

A third time, `step`, is what one layer costs inside a decode step: `--layers` calls, each
over its own KV cache (as a model's layers are; no call finds another's data in L2), captured
in one graph and divided by their number. A single replay also pays the graph launch once per
call; a real decode step pays it once for all its layers. It is reported beside the others,
and the speedups are given on both.

    python benchmarks/attention_kernels.py                      # CUDA: Triton kernels, 4K..512K, batch 1 and 8
    python benchmarks/attention_kernels.py --device cpu         # torch references, 4K..32K, batch 1, float32
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memstream.backends.kernels import AttentionParams, decode_attention
from memstream.backends.kernels.block_topk import build_representatives

N_HEADS, N_KV, HEAD_DIM, BLOCK = 32, 8, 128, 128
BUDGET = 4096
POLICY_PARAMS = {
    "dense": AttentionParams(block_size=BLOCK),
    "sink_window": AttentionParams(sinks=4, window=BUDGET - 4, block_size=BLOCK),
    "block_topk": AttentionParams(sinks=4, window=1024, topk=24, representatives=4, block_size=BLOCK),
    "snapkv": AttentionParams(budget=BUDGET - 32, observation_window=32, block_size=BLOCK),
}
GPU_CONTEXTS = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288]
CPU_CONTEXTS = [4096, 8192, 16384, 32768]
REPORTS = Path(__file__).resolve().parents[1] / "reports"


def paged_cache(batch: int, context: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    blocks = -(-context // BLOCK)
    k = torch.randn(batch * blocks, N_KV, BLOCK, HEAD_DIM, generator=gen, device=device, dtype=dtype)
    v = torch.randn(batch * blocks, N_KV, BLOCK, HEAD_DIM, generator=gen, device=device, dtype=dtype)
    # Shuffled block ids: the kernels really go through the block table.
    table = torch.randperm(batch * blocks, generator=gen, device=device).view(batch, blocks).to(torch.int32)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, N_HEADS, HEAD_DIM, generator=gen, device=device, dtype=dtype)
    return q, k, v, table, lens


def time_ms(fn, device: torch.device, reps: int) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=50))
    fn()  # warm-up
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def graph_ms(fn, device: torch.device, reps: int) -> tuple[float | None, str | None]:
    """Time replays of `fn` captured in a CUDA graph; (ms, None), or (None, why) if capture fails."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):  # compile and warm the allocator outside the capture
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as exc:  # reported in the table, not hidden: the plain time still stands
        torch.cuda.synchronize(device)
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    ms = time_ms(graph.replay, device, reps)
    del graph
    return ms, None


def bytes_read(policy: str, batch: int, context: int, itemsize: int) -> int:
    row = N_KV * HEAD_DIM * itemsize  # one token's K (or V) across KV heads
    if policy == "dense":
        tokens = context
    elif policy in ("sink_window", "snapkv"):
        tokens = min(context, BUDGET)
    else:
        p = POLICY_PARAMS["block_topk"]
        tokens = min(context, p.sinks + p.topk * BLOCK + p.window)
        reps = (context // BLOCK) * p.representatives * row
        return batch * (2 * tokens * row + reps)
    return batch * 2 * tokens * row


def fits(batch: int, context: int, itemsize: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    need = 4 * batch * context * N_KV * HEAD_DIM * itemsize  # paged K/V + the contiguous SDPA copy
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.8 * free


def layers_that_fit(wanted: int, batch: int, context: int, itemsize: int, device: torch.device) -> int:
    """How many extra per-layer caches the step timing can hold (each one paged K/V), at most `wanted`."""
    if device.type != "cuda":
        return wanted
    per_layer = 2 * batch * context * N_KV * HEAD_DIM * itemsize
    free, _ = torch.cuda.mem_get_info(device)
    # Keep one layer's worth free for the contiguous SDPA copy made after the policies are timed.
    return max(0, min(wanted, int(0.8 * free // per_layer) - 1))


def policy_call(policy: str, params: AttentionParams, q, k, v, table, lens):
    """One decode-attention call of `policy` over a cache, ready to time (validated once here)."""
    if policy == "snapkv":
        # Decode after compression: dense over the compressed BUDGET-token cache.
        kept = min(int(lens.max()), BUDGET)
        table, lens = table[:, : -(-kept // BLOCK)].contiguous(), torch.full_like(lens, kept)
    extra = {"representatives": build_representatives(k, table, lens, params.representatives)} if policy == "block_topk" else {}
    decode_attention(policy, q, k, v, table, lens, params, **extra)
    return functools.partial(decode_attention, policy, q, k, v, table, lens, params, check=False, **extra)


def step_ms(calls: list, device: torch.device, reps: int) -> tuple[float | None, str | None]:
    """Per-layer time of one decode step that makes every call in `calls` (graph-captured on CUDA)."""
    def step() -> None:
        for call in calls:
            call()

    if device.type == "cuda":
        ms, error = graph_ms(step, device, reps)
        return (None, error) if ms is None else (ms / len(calls), None)
    return time_ms(step, device, reps) / len(calls), None


def run_case(batch: int, context: int, dtype: torch.dtype, device: torch.device, use_triton: bool, reps: int, layers: int = 1) -> dict:
    q, k, v, table, lens = paged_cache(batch, context, dtype, device)
    itemsize = k.element_size()
    extra_layers = layers_that_fit(layers - 1, batch, context, itemsize, device) if layers > 1 else 0
    # The step's other layers: their own caches (seeded apart), the same query.
    others = [paged_cache(batch, context, dtype, device, seed=layer)[1:] for layer in range(1, extra_layers + 1)]
    row: dict = {"batch": batch, "context": context, "layers": 1 + extra_layers if others else None, "policies": {}}
    for policy, params in POLICY_PARAMS.items():
        params = AttentionParams(**{**params.__dict__, "use_triton": use_triton})
        call = policy_call(policy, params, q, k, v, table, lens)
        stats = {"plain_ms": time_ms(call, device, reps), "graph_ms": None, "step_ms": None}
        if device.type == "cuda":
            stats["graph_ms"], error = graph_ms(call, device, reps)
            if error:
                stats["graph_error"] = error
        if others:
            calls = [call] + [policy_call(policy, params, q, *cache) for cache in others]
            stats["step_ms"], error = step_ms(calls, device, reps)
            if error:
                stats["step_error"] = error
            del calls
        ms = stats["graph_ms"] or stats["plain_ms"]
        moved = bytes_read(policy, batch, context, itemsize)
        row["policies"][policy] = {"ms": ms, **stats, "gb_per_s": moved / ms / 1e6, "bytes": moved}
        if stats["step_ms"]:
            row["policies"][policy]["step_gb_per_s"] = moved / stats["step_ms"] / 1e6
        del call
    del others
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # torch SDPA over a contiguous copy (the best case for the library call: no block table).
    kc = k[table.long()].permute(0, 2, 1, 3, 4).reshape(batch, N_KV, -1, HEAD_DIM)[:, :, :context]
    vc = v[table.long()].permute(0, 2, 1, 3, 4).reshape(batch, N_KV, -1, HEAD_DIM)[:, :, :context]
    kc, vc = kc.contiguous(), vc.contiguous()
    q4 = q[:, :, None, :]
    sdpa = functools.partial(F.scaled_dot_product_attention, q4, kc, vc, enable_gqa=True)
    row["sdpa_plain_ms"] = time_ms(sdpa, device, reps)
    row["sdpa_graph_ms"] = graph_ms(sdpa, device, reps)[0] if device.type == "cuda" else None
    sdpa_ms = row["sdpa_ms"] = row["sdpa_graph_ms"] or row["sdpa_plain_ms"]
    dense_ms = row["policies"]["dense"]["ms"]
    dense_step_ms = row["policies"]["dense"]["step_ms"]
    for stats in row["policies"].values():
        stats["speedup_vs_dense"] = dense_ms / stats["ms"]
        stats["speedup_vs_sdpa"] = sdpa_ms / stats["ms"]
        if stats["step_ms"] and dense_step_ms:
            stats["step_speedup_vs_dense"] = dense_step_ms / stats["step_ms"]
    del q, k, v, table, lens, kc, vc
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def write_reports(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "kernels.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Decode-attention kernels: time per call",
        "",
        f"Device: {result['device_name']} ({result['device']}); implementation: {result['implementation']}; dtype {result['dtype']}.",
        "Shapes: 32 query heads, 8 KV heads, head dim 128, 128-token blocks; sparse budgets ~4K tokens (see benchmarks/attention_kernels.py).",
        "",
    ]
    if result["device"] != "cuda":
        lines += [
            "**These are CPU timings of the torch reference implementations, at a reduced range. "
            "The GPU numbers (Triton kernels, 4K-512K, batch 1 and 8, bf16; targets: dense >= 70% of HBM "
            "bandwidth at 128K, block_topk >= 8x dense at 128K and >= 20x at 512K) are still to be measured: "
            "run `python benchmarks/attention_kernels.py` on a CUDA machine.**",
            "",
        ]
    if result["device"] == "cuda":
        lines += [
            "`graph ms`: replay of one decode-attention call captured in a CUDA graph (kernel time plus "
            "in-graph gaps); `plain ms`: one eager call, Python and launch overhead included (inputs "
            "validated once beforehand, `check=False` in the loop). GB/s and speedups use the graph times.",
            "",
        ]
    if any(row.get("layers") for row in result["rows"]):
        lines += [
            "`step ms/layer`: one decode step's calls, one per layer over that layer's own cache (`layers` of them), "
            "timed together (graph-captured on CUDA) and divided by their number; `step x dense` compares those.",
            "",
        ]
    lines += ["| batch | context | policy | graph ms | plain ms | GB/s | x dense | x SDPA | step ms/layer | step x dense |",
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        for policy, s in row["policies"].items():
            step_speedup = s.get("step_speedup_vs_dense")
            lines.append(
                f"| {row['batch']} | {row['context']} | {policy} | {fmt_ms(s.get('graph_ms'))} | {fmt_ms(s['plain_ms'])} | "
                f"{s['gb_per_s']:.1f} | {s['speedup_vs_dense']:.2f} | {s['speedup_vs_sdpa']:.2f} | "
                f"{fmt_ms(s.get('step_ms'))} | {'' if step_speedup is None else f'{step_speedup:.2f}'} |"
            )
        lines.append(f"| {row['batch']} | {row['context']} | torch SDPA (contiguous) | {fmt_ms(row.get('sdpa_graph_ms'))} | "
                     f"{fmt_ms(row['sdpa_plain_ms'])} | | | | | |")
    errors = [(row["batch"], row["context"], p, s["graph_error"]) for row in result["rows"]
              for p, s in row["policies"].items() if s.get("graph_error")]
    if errors:
        lines += ["", "CUDA graph capture failed (plain time used): "
                  + "; ".join(f"batch {b} x {c} {p}: {e}" for b, c, p, e in errors)]
    if result["skipped"]:
        lines += ["", "Skipped for lack of memory: " + ", ".join(f"batch {b} x {c}" for b, c in result["skipped"])]
    (out_dir / "kernels.md").write_text("\n".join(lines) + "\n")
    plot(result, out_dir / "kernels.png")


def fmt_ms(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.4f}"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({row["batch"] for row in result["rows"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in result["rows"] if r["batch"] == batch]
        contexts = [r["context"] for r in rows]
        for policy in POLICY_PARAMS:
            ax.plot(contexts, [r["policies"][policy]["ms"] for r in rows], marker="o", label=policy)
        ax.plot(contexts, [r["sdpa_ms"] for r in rows], marker="x", linestyle="--", label="torch SDPA")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("ms per call (CUDA graph replay)" if result["device"] == "cuda" else "ms per call")
        ax.set_title(f"batch {batch}, {result['implementation']}, {result['device_name']}")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None)
    parser.add_argument("--reps", type=int, default=3, help="timed runs per point on CPU (GPU uses triton's do_bench)")
    parser.add_argument("--layers", type=int, default=None,
                        help="layers in the timed decode step (default 8 on CUDA, 1 = no step timing on CPU); fewer where memory is short")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    contexts = args.contexts or (GPU_CONTEXTS if on_gpu else CPU_CONTEXTS)
    batches = args.batches or ([1, 8] if on_gpu else [1])
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_gpu else "float32"))
    layers = args.layers or (8 if on_gpu else 1)
    result = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or platform.machine(),
        "implementation": "triton" if on_gpu else "torch reference",
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "budget_tokens": BUDGET,
        "layers": layers,
        "rows": [],
        "skipped": [],
    }
    for batch in batches:
        for context in contexts:
            if not fits(batch, context, dtype.itemsize, device):
                result["skipped"].append((batch, context))
            else:
                row = run_case(batch, context, dtype, device, use_triton=on_gpu, reps=args.reps, layers=layers)
                result["rows"].append(row)
                print(f"batch {batch} context {context} (graph / plain ms): "
                      + ", ".join(f"{p} {fmt_ms(s['graph_ms'])} / {s['plain_ms']:.4f} / step {fmt_ms(s['step_ms'])}" for p, s in row["policies"].items())
                      + f", sdpa {fmt_ms(row['sdpa_graph_ms'])} / {row['sdpa_plain_ms']:.4f}", flush=True)
            write_reports(result, args.out)  # after every point: a run cut short by a time limit still reports


if __name__ == "__main__":
    main()
