"""Prefill and decode speed of memstream's local runner vs transformers `generate`.

Same model (the default SmolLM2-135M-Instruct GGUF, de-quantised by transformers; both
runners share the weights), same prompt, greedy, batch 1. Runs are interleaved
(ours, theirs, ours, ...) so background load hits both alike; the median is reported.

    python benchmarks/local_decode.py                 # CPU (and CUDA when present)
    python benchmarks/local_decode.py --device cuda --prompt-tokens 1024

Writes reports/local_decode.json and reports/local_decode.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.local import LocalModel, decode_n, prefill, sample
from memstream.backends.llama import ModelArgs, Transformer

MODEL = "smollm2-135m-instruct"
# SmolLM2-135M's shape, for --random-weights on machines without the model file (speed does not depend on the values).
SMOLLM2_CONFIG = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                      tie_word_embeddings=True)
PROMPT_TOKENS = 256
NEW_TOKENS = 64
REPEATS = 3
BLOCK_SIZE = 128
REPORTS = Path(__file__).resolve().parents[1] / "reports"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_prompt(tokenizer, n: int) -> torch.Tensor:
    if tokenizer is None:
        return torch.randint(0, SMOLLM2_CONFIG["vocab_size"], (1, n), generator=torch.Generator().manual_seed(0))
    text = "A long conversation about travel, work, family and plans for the summer. " * (n // 8 + 8)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return torch.tensor([ids])


def time_ours(local, ids: torch.Tensor, new_tokens: int) -> tuple[float, float, list[int]]:
    a, device = local.args, local.device
    cache = PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, BLOCK_SIZE, ids.shape[1] + new_tokens,
                         dtype=local.model.output.weight.dtype, device=device)
    sync(device)
    start = time.perf_counter()
    first = int(sample(prefill(local.model, ids, cache))[0])
    sync(device)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    rest = decode_n(local.model, first, new_tokens - 1, cache, next_token=sample)
    sync(device)
    return prefill_s, time.perf_counter() - start, [first] + rest


def time_transformers(hf_model, ids: torch.Tensor, new_tokens: int) -> tuple[float, float, list[int]]:
    """Prefill = generate(1 token); decode = generate(N) - generate(1), over N - 1 tokens."""
    def generate(n: int):
        sync(ids.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = hf_model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, top_p=None, top_k=None, temperature=None)
        sync(ids.device)
        return time.perf_counter() - start, out[0, ids.shape[1]:].tolist()

    prefill_s, _ = generate(1)
    total_s, tokens = generate(new_tokens)
    return prefill_s, max(total_s - prefill_s, 1e-9), tokens


def bench_device(hf_model, tokenizer, device: torch.device, prompt_tokens: int, new_tokens: int, repeats: int) -> dict:
    hf_model = hf_model.to(device)
    # Our Transformer on the same tensors (q/k/v and gate/up are fused copies).
    model = Transformer.from_hf_state_dict(ModelArgs.from_hf_config(hf_model.config), hf_model.state_dict())
    model.setup_rope(device)
    local = LocalModel(MODEL, model, tokenizer, frozenset(), model.args.max_seq_len, device)
    ids = make_prompt(tokenizer, prompt_tokens).to(device)
    time_ours(local, ids, 4)  # warm-up (allocator, kernels, lazy init)
    time_transformers(hf_model, ids, 4)
    load = os.getloadavg()[0]
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(time_ours(local, ids, new_tokens))
        theirs.append(time_transformers(hf_model, ids, new_tokens))

    def summary(runs) -> dict:
        prefill_s = statistics.median(r[0] for r in runs)
        decode_s = statistics.median(r[1] for r in runs)
        return {"prefill_s": prefill_s, "decode_s": decode_s,
                "prefill_tokens_per_s": prompt_tokens / prefill_s, "decode_tokens_per_s": (new_tokens - 1) / decode_s}

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,  # other processes skew CPU timings; keep it with the numbers
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "memstream": summary(ours),
        "transformers": summary(theirs),
        "greedy_tokens_identical": ours[0][2] == theirs[0][2],
    }


def load_models(random_weights: bool):
    """transformers' model and tokenizer: the real checkpoint, or its architecture with random weights."""
    if random_weights:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).eval(), None
    from memstream.backends.local import load_hf
    from memstream.backends.models import resolve_model

    spec = resolve_model(MODEL)
    return load_hf(spec.path, spec.gguf_file)


def write_reports(results: list[dict], out_dir: Path, random_weights: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"model": MODEL, "weights": "random (same architecture)" if random_weights else "GGUF de-quantised by transformers",
               "dtype": "float32", "torch": torch.__version__, "results": results}
    (out_dir / "local_decode.json").write_text(json.dumps(payload, indent=2) + "\n")
    weights = " with random weights" if random_weights else ""
    lines = [
        f"# Local decode speed: {MODEL}{weights} (float32, batch 1, greedy)",
        "",
        "| device | runner | prefill tok/s | decode tok/s | prompt | new tokens | same tokens |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        for runner in ("memstream", "transformers"):
            s = r[runner]
            lines.append(f"| {r['device']} ({r['device_name']}, {r['torch_threads']} threads) | {runner} | "
                         f"{s['prefill_tokens_per_s']:.0f} | {s['decode_tokens_per_s']:.1f} | {r['prompt_tokens']} | "
                         f"{r['new_tokens']} | {r['greedy_tokens_identical']} |")
    loads = ", ".join(f"{r['device']}: {r.get('load_average_at_start', float('nan')):.1f}" for r in results)
    lines += ["", "Median of interleaved runs; transformers decode = generate(N) - generate(1) over N - 1 tokens.",
              f"1-minute load average when each device's runs started: {loads}.", ""]
    (out_dir / "local_decode.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu / cuda (repeatable; default: cpu, plus cuda if present)")
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--random-weights", action="store_true", help="the model's architecture with random weights (no model file needed)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per physical core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    hf_model, tokenizer = load_models(args.random_weights)
    results = []
    for name in devices:
        result = bench_device(hf_model, tokenizer, torch.device(name), args.prompt_tokens, args.new_tokens, args.repeats)
        results.append(result)
        print(json.dumps(result, indent=2))
    write_reports(results, args.out, args.random_weights)


if __name__ == "__main__":
    main()
