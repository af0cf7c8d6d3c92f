"""Relative output error of each sparse policy vs dense attention on real model activations.

The default local model (SmolLM2-135M-Instruct) reads a real long conversation (LoCoMo,
sample data); at the next decode step we capture every layer's query, key and value and
compute that layer's attention under each policy, on the same cache the runner builds
(block_topk representatives from the prompt's queries; snapkv compressed after prefill).
Error per layer = ||out_policy - out_dense|| / ||out_dense|| over all heads; the report gives
mean / median / max over the layers. Two budgets: the papers' defaults (config) and a tight
one (~512 tokens), so the error shows before the defaults cover short contexts.

    python benchmarks/kernel_quality.py                       # 1K, 2K, 4K, 8K tokens
    python benchmarks/kernel_quality.py --contexts 1024,2048
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from memstream.backends import kernels
from memstream.backends.kernels import AttentionParams, decode_attention
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import apply_rope
from memstream.backends.local import decode_one, prefill
from memstream.backends.models import DEFAULT_MODEL, load_cached, resolve_model

ROOT = Path(__file__).resolve().parents[1]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "locomo10_dev.json"
REPORTS = ROOT / "reports"
BUDGETS = {
    "default": AttentionParams(),
    "tight": AttentionParams(sinks=4, window=256, topk=2, budget=480, observation_window=32),
}
SPARSE = ("sink_window", "block_topk", "snapkv")


def conversation_text(path: Path) -> str:
    """All sessions of every sample, as 'Speaker: text' lines with session dates."""
    data = json.loads(path.read_text(encoding="utf-8"))
    lines = []
    for sample in data:
        conv = sample["conversation"]
        n = 1
        while f"session_{n}" in conv:
            lines.append(f"[{conv.get(f'session_{n}_date_time', '')}]")
            lines += [f"{turn['speaker']}: {turn['text']}" for turn in conv[f"session_{n}"]]
            n += 1
    return "\n".join(lines)


def capture_decode(model, tokens: torch.Tensor, params: AttentionParams, policy: str):
    """Prefill tokens[:-1] under `policy`'s prefill hook, decode the last token densely; returns the cache and per-layer (q, k, v)."""
    a = model.args
    cache = PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, params.block_size, tokens.shape[1] + 1)
    prefill(model, tokens[:, :-1], cache, policy, params)
    captured: dict[int, tuple] = {}

    def hook(module, inputs, _output):
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        q, k, v = module.wqkv(x).split(module.split, dim=-1)
        q = apply_rope(q.view(1, 1, a.n_heads, a.head_dim).transpose(1, 2), cos, sin)[:, :, 0]  # [1, H, Dh]
        k = apply_rope(k.view(1, 1, a.n_kv_heads, a.head_dim).transpose(1, 2), cos, sin)[:, :, 0]
        captured[module.layer_idx] = (q, k, v.view(1, a.n_kv_heads, a.head_dim))

    handles = [layer.attention.register_forward_hook(hook) for layer in model.layers]
    try:
        decode_one(model, tokens[:, -1:], cache, "dense" if policy == "snapkv" else policy, params)
    finally:
        for h in handles:
            h.remove()
    return cache, captured


@torch.inference_mode()
def measure(model, tokens: torch.Tensor, budget: AttentionParams) -> dict:
    params = dataclasses.replace(budget, use_triton=False)
    # One prefill serves dense, sink_window and block_topk (block_topk's hook only adds representatives).
    cache, captured = capture_decode(model, tokens, params, "block_topk")
    snap_cache, _ = capture_decode(model, tokens, params, "snapkv")
    errors: dict[str, list[float]] = {p: [] for p in SPARSE}
    for layer, (q, _, _) in sorted(captured.items()):
        args = (cache.k(layer), cache.v(layer), cache.block_table, cache.seq_lens)
        dense = decode_attention("dense", q, *args, params).float()
        for policy in ("sink_window", "block_topk"):
            extra = kernels.before_decode(policy, cache, layer, params)
            out = decode_attention(policy, q, *args, params, **extra).float()
            errors[policy].append(float((out - dense).norm() / dense.norm()))
        # snapkv decode: dense over the layer's compressed cache (the last token was written there too).
        snap_args = (snap_cache.k(layer), snap_cache.v(layer), snap_cache.block_table, snap_cache.seq_lens)
        out = decode_attention("snapkv", q, *snap_args, params).float()
        errors["snapkv"].append(float((out - dense).norm() / dense.norm()))
    return {
        policy: {"mean": statistics.mean(e), "median": statistics.median(e), "max": max(e), "per_layer": e,
                 "cache_tokens": int(snap_cache.lengths[0]) if policy == "snapkv" else int(cache.lengths[0])}
        for policy, e in errors.items()
    }


def write_reports(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "kernel_quality.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Sparse attention vs dense on real activations",
        "",
        f"Model {result['model']}, text: {result['text']}. Relative L2 error of one decode step's attention",
        "output per layer (all heads), against dense attention on the same cache; mean / median / max over layers.",
        "",
    ]
    for name, budget in result["budgets"].items():
        lines += [f"Budget `{name}`: {budget}", ""]
    lines += ["| budget | context | policy | mean | median | max |", "|---|---:|---|---:|---:|---:|"]
    for row in result["rows"]:
        for policy, s in row["errors"].items():
            lines.append(f"| {row['budget']} | {row['context']} | {policy} | {s['mean']:.4f} | {s['median']:.4f} | {s['max']:.4f} |")
    lines += ["", "An error of 0 means the budget covers the context (the policy is dense there)."]
    (out_dir / "kernel_quality.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 2048, 4096, 8192])
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    spec = resolve_model(DEFAULT_MODEL)
    local = load_cached(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name)
    ids = local.tokenizer(conversation_text(LOCOMO), add_special_tokens=False)["input_ids"]
    result = {
        "model": spec.name,
        "text": "LoCoMo sample conversations (shared data), first N tokens",
        "budgets": {name: {k: v for k, v in dataclasses.asdict(b).items() if k != "use_triton"} for name, b in BUDGETS.items()},
        "rows": [],
    }
    for context in args.contexts:
        if context > len(ids) or context > local.args.max_seq_len:
            print(f"skip {context}: text has {len(ids)} tokens, model window {local.args.max_seq_len}")
            continue
        tokens = torch.tensor([ids[:context]])
        for name, budget in BUDGETS.items():
            errors = measure(local.model, tokens, budget)
            result["rows"].append({"budget": name, "context": context, "errors": errors})
            print(f"{name} {context}: " + ", ".join(f"{p} {s['mean']:.4f}" for p, s in errors.items()), flush=True)
        write_reports(result, args.out)  # after each length, so a long run that is stopped keeps its rows


if __name__ == "__main__":
    main()
