"""Passkey retrieval accuracy of the default local model per attention policy and context length.

A 5-digit key is hidden at a random depth in filler text; the model completes "The pass key
is" greedily and a trial passes when the key appears in its first 8 tokens. The prompt is
prefilled once per trial (prefill attention is dense in the runner; policies act on decode),
then each policy decodes from its own copy of the cache: sink_window and block_topk read the
cache through their kernels' references, snapkv first compresses it as the runner does.
Lengths past the model's trained window extend the RoPE tables (positions simply continue).

    python benchmarks/passkey.py                                   # 1K..32K, 3 trials
    python benchmarks/passkey.py --contexts 1024,2048 --trials 2   # what a busy CPU allows
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

import torch

from memstream.backends import kernels
from memstream.backends.kernels import POLICIES, AttentionParams
from memstream.backends.kernels.snapkv import compress_sequence
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import apply_rope
from memstream.backends.local import decode_one, prefill
from memstream.backends.models import DEFAULT_MODEL, load_cached, resolve_model

REPORTS = Path(__file__).resolve().parents[1] / "reports"
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
PARAMS = AttentionParams(use_triton=False)  # the papers' defaults, as in the config


def build_prompt(tokenizer, context: int, key: int, depth: float) -> list[int]:
    unit = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    fixed = len(tokenizer(NEEDLE.format(key=key) + QUESTION, add_special_tokens=False)["input_ids"])
    n = max(1, (context - fixed) // unit)
    where = int(n * depth)
    text = FILLER * where + NEEDLE.format(key=key) + FILLER * (n - where) + QUESTION
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def trial(local, ids: list[int], key: int) -> dict[str, bool]:
    model, a = local.model, local.model.args
    n_obs = PARAMS.observation_window
    cache = PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, PARAMS.block_size, len(ids) + 9)
    q_obs: dict[int, torch.Tensor] = {}

    def keep_last_queries(module, inputs, _output):  # snapkv needs the prompt's last queries per layer
        x, cos, sin = inputs[0][:, -n_obs:], inputs[1][:, :, -n_obs:], inputs[2][:, :, -n_obs:]
        q = module.wqkv(x).split(module.split, dim=-1)[0]
        q_obs[module.layer_idx] = apply_rope(q.view(1, -1, a.n_heads, a.head_dim).transpose(1, 2), cos, sin)[0]

    handles = [layer.attention.register_forward_hook(keep_last_queries) for layer in model.layers]
    try:
        # block_topk's prefill hook only adds representatives, so this cache serves every policy.
        first = int(prefill(model, torch.tensor([ids]), cache, "block_topk", PARAMS).argmax())
    finally:
        for h in handles:
            h.remove()
    saved = (cache.k_cache.clone(), cache.v_cache.clone(), list(cache.lengths), cache.positions.clone())
    reps = {k: v.clone() for k, v in cache.policy_state.items()}
    results = {}
    for policy in POLICIES:
        cache.k_cache.copy_(saved[0])
        cache.v_cache.copy_(saved[1])
        cache.block_table.copy_(torch.arange(cache.block_table.numel(), dtype=torch.int32).view_as(cache.block_table))
        cache.seq_lens.fill_(saved[2][0])
        cache.lengths = list(saved[2])
        cache.positions.copy_(saved[3])
        cache.policy_state = {k: v.clone() for k, v in reps.items()}
        if policy == "snapkv":
            for layer in range(a.n_layers):
                kept = compress_sequence(q_obs[layer], cache.k(layer), cache.v(layer), cache.block_table, 0, len(ids), PARAMS)
            cache.rewrite(0, cache.block_table[0, : -(-kept // cache.block_size)].clone(), kept)
        out, token = [first], torch.tensor([[first]])
        for _ in range(7):
            token.fill_(int(decode_one(model, token, cache, policy, PARAMS).argmax()))
            out.append(int(token))
        results[policy] = str(key) in local.tokenizer.decode(out)
    return results


def write_reports(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "passkey.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Passkey retrieval per attention policy",
        "",
        f"Model {result['model']} (trained window {result['trained_window']} tokens), greedy, "
        f"{result['trials']} trial(s) per length, key at random depth. Policy parameters: {result['params']}.",
        "Prefill is dense in the runner (policies act on decode), so past the trained window the prompt",
        "itself is out of distribution for every policy.",
        "",
        "| context | " + " | ".join(POLICIES) + " |",
        "|---:|" + "---:|" * len(POLICIES),
    ]
    for row in result["rows"]:
        lines.append(f"| {row['context']} | " + " | ".join(f"{row['accuracy'][p]:.2f}" for p in POLICIES) + " |")
    if result.get("not_run"):
        lines += ["", f"Not run in this session (CPU time): {', '.join(map(str, result['not_run']))} tokens."]
    (out_dir / "passkey.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    spec = resolve_model(DEFAULT_MODEL)
    local = load_cached(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name)
    trained = local.args.max_seq_len
    if max(args.contexts) + 16 > trained:
        # Positions past the trained window: extend the RoPE tables (nothing else changes).
        local.model.args = dataclasses.replace(local.model.args, max_seq_len=max(args.contexts) + 64)
        local.model.setup_rope(local.device)
    rng = random.Random(args.seed)
    result = {"model": spec.name, "trained_window": trained, "trials": args.trials,
              "params": {k: v for k, v in dataclasses.asdict(PARAMS).items() if k != "use_triton"}, "rows": [],
              "not_run": list(args.contexts)}
    for context in args.contexts:
        hits = {p: 0 for p in POLICIES}
        for _ in range(args.trials):
            key = rng.randint(10000, 99999)
            ids = build_prompt(local.tokenizer, context, key, rng.uniform(0.1, 0.9))
            for policy, ok in trial(local, ids, key).items():
                hits[policy] += ok
        result["rows"].append({"context": context, "accuracy": {p: h / args.trials for p, h in hits.items()}})
        result["not_run"].remove(context)
        print(context, result["rows"][-1]["accuracy"], flush=True)
        write_reports(result, args.out)


if __name__ == "__main__":
    main()
