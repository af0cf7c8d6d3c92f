"""Relative output error of each sparse policy vs dense attention on real model activations.

The default local model (SmolLM2-135M-Instruct) reads a real long conversation (LoCoMo,
sample data). Two measurements, each against dense attention, within the trained window:

- decode: the prompt is prefilled densely and the next token decoded; every layer's decode
  query then attends the same cache under each policy object (block_topk's representatives
  from the prompt's own queries, InfLLM positions; sink_window with its in-cache sink
  distance; snapkv over the cache its own prefill compressed). Error per layer =
  ||out_policy - out_dense|| / ||out_dense|| over all heads; mean / median / max over layers.
- chunked prefill: the prompt is prefilled in chunks through each policy, as the runner does;
  per layer the attention output of the last chunk (all its positions) against dense prefill's,
  so a layer's error includes what earlier layers changed; and the relative error of the last
  position's logits, with whether its top token matches dense.

Two budgets: the papers' defaults (config) and a tight one (~512 tokens), so the error shows
before the defaults cover short contexts.

    python benchmarks/kernel_quality.py                       # 1K, 2K, 4K tokens
    python benchmarks/kernel_quality.py --contexts 1024,2048,4096,8192
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from memstream.backends.kernels import AttentionParams, Rope, make_policy
from memstream.backends.llama import apply_rope
from memstream.backends.local import decode_one, new_cache, prefill
from memstream.backends.models import DEFAULT_MODEL, load_cached, resolve_model

ROOT = Path(__file__).resolve().parents[1]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "locomo10_dev.json"
REPORTS = ROOT / "reports"
BUDGETS = {
    "default": AttentionParams(),
    "tight": AttentionParams(sinks=4, window=256, topk=2, budget=480, observation_window=32, prefill_chunk=256),
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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def stats(errors: list[float]) -> dict:
    return {"mean": statistics.mean(errors), "median": statistics.median(errors), "max": max(errors), "per_layer": errors}


def query_hook(model, store: dict, last_only: bool):
    """Forward hooks that keep each layer's rotated queries ([H, T, Dh], or the last one [1, H, Dh])."""
    a = model.args

    def hook(module, inputs, _output):
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        q = module.wqkv(x).split(module.split, dim=-1)[0]
        q = apply_rope(q.view(1, -1, a.n_heads, a.head_dim).transpose(1, 2), cos, sin)  # [1, H, T, Dh]
        store[module.layer_idx] = q[:, :, -1] if last_only else torch.cat([store.get(module.layer_idx, q[0, :, :0]), q[0]], 1)

    return [layer.attention.register_forward_hook(hook) for layer in model.layers]


def measure_decode(model, tokens: torch.Tensor, params: AttentionParams) -> dict:
    """Per-layer decode-step error of each policy on the cache a dense prefill built."""
    rope = Rope(model.rope_cos, model.rope_sin)
    dense = make_policy("dense", params)
    cache = new_cache(model, dense, tokens.shape[1] + 1)
    prompt_q: dict[int, torch.Tensor] = {}
    handles = query_hook(model, prompt_q, last_only=False)
    try:
        prefill(model, tokens[:, :-1], cache, dense)
    finally:
        for h in handles:
            h.remove()
    decode_q: dict[int, torch.Tensor] = {}
    handles = query_hook(model, decode_q, last_only=True)
    try:
        decode_one(model, tokens[:, -1:], cache, dense)
    finally:
        for h in handles:
            h.remove()
    # snapkv: its own prefill (dense attention, so the same activations), compressed afterwards.
    snap = make_policy("snapkv", params)
    snap_cache = new_cache(model, snap, tokens.shape[1] + 1)
    prefill(model, tokens[:, :-1], snap_cache, snap)
    decode_one(model, tokens[:, -1:], snap_cache, snap)
    sink, topk = make_policy("sink_window", params), make_policy("block_topk", params)
    errors: dict[str, list[float]] = {p: [] for p in SPARSE}
    for layer in range(model.args.n_layers):
        q = decode_q[layer]
        want = dense.attend_decode(q, cache, layer, rope)
        errors["sink_window"].append(rel(sink.attend_decode(q, cache, layer, rope), want))
        topk.update_representatives(cache, layer, 0, prompt_q[layer], 0, rope)  # InfLLM: the blocks' own queries
        errors["block_topk"].append(rel(topk.attend_decode(q, cache, layer, rope), want))
        errors["snapkv"].append(rel(snap.attend_decode(q, snap_cache, layer, rope), want))
    out = {p: {**stats(e), "cache_tokens": int(cache.lengths[0])} for p, e in errors.items()}
    out["snapkv"]["cache_tokens"] = int(snap_cache.lengths[0])
    return out


def chunk_outputs(model, tokens: torch.Tensor, policy) -> tuple[dict, torch.Tensor]:
    """Each layer's attention output for the last prefill chunk, and the last position's logits."""
    outs: dict[int, torch.Tensor] = {}
    hooks = [layer.attention.wo.register_forward_pre_hook(
        lambda module, inputs, i=i: outs.__setitem__(i, inputs[0].detach().clone())) for i, layer in enumerate(model.layers)]
    try:
        cache = new_cache(model, policy, tokens.shape[1] + 1)
        logits = prefill(model, tokens, cache, policy)
    finally:
        for h in hooks:
            h.remove()
    return outs, logits[0]


def measure_chunked(model, tokens: torch.Tensor, params: AttentionParams) -> dict:
    dense_out, dense_logits = chunk_outputs(model, tokens, make_policy("dense", params))
    result = {}
    for name in SPARSE:
        outs, logits = chunk_outputs(model, tokens, make_policy(name, params))
        errors = [rel(outs[i], dense_out[i]) for i in range(model.args.n_layers)]
        result[name] = {**stats(errors), "logits_rel_error": rel(logits, dense_logits),
                        "top1_matches_dense": bool(logits.argmax() == dense_logits.argmax())}
    return result


def write_reports(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "kernel_quality.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Sparse attention vs dense on real activations",
        "",
        f"Model {result['model']}, text: {result['text']}, CPU float32 (a shared, loaded machine; no timings here).",
        "",
    ]
    for name, budget in result["budgets"].items():
        lines += [f"Budget `{name}`: {budget}", ""]
    lines += ["## Decode step", "",
              "Relative L2 error of one decode step's attention output per layer (all heads), against dense attention",
              "on the same cache (a dense prefill's); mean / median / max over layers.", "",
              "| budget | context | policy | mean | median | max |", "|---|---:|---|---:|---:|---:|"]
    for row in result["rows"]:
        for policy, s in row["errors"].items():
            lines.append(f"| {row['budget']} | {row['context']} | {policy} | {s['mean']:.4f} | {s['median']:.4f} | {s['max']:.4f} |")
    lines += ["", "## Chunked prefill", "",
              "The prompt prefilled in chunks (prefill_chunk of the budget) through each policy, as the runner does.",
              "Per layer: relative L2 error of the last chunk's attention output (every position of the chunk) against",
              "dense prefill's; each layer's input already carries the earlier layers' differences. Last position:",
              "relative error of the logits and whether the top token matches dense.", "",
              "| budget | context | policy | mean | median | max | logits error | top-1 = dense |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
    for row in result.get("chunked_rows", []):
        for policy, s in row["errors"].items():
            lines.append(f"| {row['budget']} | {row['context']} | {policy} | {s['mean']:.4f} | {s['median']:.4f} | "
                         f"{s['max']:.4f} | {s['logits_rel_error']:.4f} | {'yes' if s['top1_matches_dense'] else 'no'} |")
    lines += ["", "An error of 0 means the budget covers the context (the policy is dense there).",
              "", f"Rerun: `python benchmarks/kernel_quality.py --contexts {','.join(map(str, result['contexts']))} "
              f"--budgets {','.join(result['budgets'])}`"]
    (out_dir / "kernel_quality.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 2048, 4096])
    parser.add_argument("--budgets", type=lambda s: s.split(","), default=list(BUDGETS), help="which of: " + ", ".join(BUDGETS))
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    budgets = {name: BUDGETS[name] for name in args.budgets}
    spec = resolve_model(DEFAULT_MODEL)
    local = load_cached(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name)
    ids = local.tokenizer(conversation_text(LOCOMO), add_special_tokens=False)["input_ids"]
    result = {
        "model": spec.name,
        "text": "LoCoMo sample conversations (shared data), first N tokens",
        "budgets": {name: {k: v for k, v in b.settings().items() if k != "use_triton"} for name, b in budgets.items()},
        "contexts": [], "rows": [], "chunked_rows": [],
    }
    with torch.inference_mode():
        for context in args.contexts:
            if context > len(ids) or context > local.args.max_seq_len:
                print(f"skip {context}: text has {len(ids)} tokens, model window {local.args.max_seq_len}")
                continue
            tokens = torch.tensor([ids[:context]])
            result["contexts"].append(context)
            for name, budget in budgets.items():
                params = dataclasses.replace(budget, use_triton=False)
                errors = measure_decode(local.model, tokens, params)
                result["rows"].append({"budget": name, "context": context, "errors": errors})
                chunked = measure_chunked(local.model, tokens, params)
                result["chunked_rows"].append({"budget": name, "context": context, "errors": chunked})
                print(f"{name} {context}: " + ", ".join(f"{p} {s['mean']:.4f}/{chunked[p]['mean']:.4f}" for p, s in errors.items()),
                      flush=True)
                write_reports(result, args.out)  # after each point, so a long run that is stopped keeps its rows


if __name__ == "__main__":
    main()
