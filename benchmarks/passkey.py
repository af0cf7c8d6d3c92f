"""Passkey retrieval of the default local model per attention policy and context length, on CPU.

A 5-digit key is hidden at a given depth in filler text; the model completes "The pass key is"
greedily and a trial passes when the key appears in its first 8 tokens. Each trial runs the
product path for its policy: `prefill` in chunks through the policy (sparse from the first
token, positions kept in range as the policy's paper does), then `decode_n`. Lengths past the
model's trained window extend the RoPE tables (positions continue; the policies keep the
distances attention sees in range). Per trial: pass/fail, prefill seconds, and the process's
peak resident memory during the trial (sampled every 20 ms from /proc/self/statm). Prefill is timed
in wall seconds and in this process's CPU seconds (with --threads 1 the latter barely moves when
other jobs share the machine).

Resumable: every finished trial is appended to `reports/passkey.jsonl`; a rerun skips the
trials already there and rewrites `reports/passkey.{json,md}` from all of them. Trials run
round by round (trial 0 of every policy and length, block_topk first, then trial 1, ...), so a
run stopped early still covers every length. dense and snapkv (whose prefill is dense) stop at --dense-max.

    nice -n 10 python benchmarks/passkey.py                      # 4K..64K, 10 trials (5 at 64K)
    python benchmarks/passkey.py --contexts 4096,8192 --trials 2 --jsonl runs/passkey.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import torch

from memstream.backends.kernels import POLICIES, AttentionParams, make_policy
from memstream.backends.local import decode_n, new_cache, prefill
from memstream.backends.models import DEFAULT_MODEL, load_cached, resolve_model

REPORTS = Path(__file__).resolve().parents[1] / "reports"
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
PARAMS = AttentionParams(use_triton=False)  # the config's defaults (the papers')
ORDER = ("block_topk", "sink_window", "dense", "snapkv")  # most informative first within a round
DECODE_TOKENS = 8


def build_prompt(tokenizer, context: int, key: int, depth: float) -> list[int]:
    unit = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    fixed = len(tokenizer(NEEDLE.format(key=key) + QUESTION, add_special_tokens=False)["input_ids"])
    n = max(1, (context - fixed) // unit)
    where = int(n * depth)
    text = FILLER * where + NEEDLE.format(key=key) + FILLER * (n - where) + QUESTION
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class PeakRSS:
    """Peak resident set size of this process while the block runs (a sampling thread)."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@torch.inference_mode()
def trial(local, ids: list[int], key: int, policy_name: str) -> dict:
    model = local.model
    policy = make_policy(policy_name, PARAMS)
    cache = new_cache(model, policy, len(ids) + DECODE_TOKENS + 1)
    with PeakRSS() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        first = int(prefill(model, torch.tensor([ids]), cache, policy).argmax())
        # CPU seconds of this process (one thread): unlike wall time, not inflated by other jobs on a shared machine.
        prefill_s, prefill_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        out = [first] + decode_n(model, first, DECODE_TOKENS - 1, cache, lambda logits: logits.argmax(dim=-1), policy=policy)
    text = local.tokenizer.decode(out)
    kv_bytes = cache.k_cache.numel() * cache.k_cache.element_size() * 2
    return {"passed": str(key) in text, "answer": text, "prefill_s": round(prefill_s, 2),
            "prefill_cpu_s": round(prefill_cpu_s, 2), "threads": torch.get_num_threads(),
            "peak_rss_mb": round(rss.peak / 2**20), "kv_cache_mb": round(kv_bytes / 2**20)}


def plan(contexts: list[int], trials: int, long_trials: int, dense_max: int, long_from: int,
         policies: tuple[str, ...] = ORDER) -> list[tuple[int, int, str]]:
    """(trial index, context, policy) in round order."""
    jobs = []
    for index in range(trials):
        for policy in [p for p in ORDER if p in policies]:  # round 0 gives block_topk at every length first: the target
            for context in contexts:
                if index >= (long_trials if context >= long_from else trials):
                    continue
                if policy in ("dense", "snapkv") and context > dense_max:
                    continue
                jobs.append((index, context, policy))
    return jobs


def trial_setup(seed: int, context: int, index: int, trials: int) -> tuple[int, float]:
    """The key and depth of trial `index` at `context`: depths spread evenly over [0.05, 0.95]."""
    rng = random.Random(f"{seed}-{context}-{index}")
    depth = 0.05 + 0.9 * ((index * 7) % trials + 0.5) / trials  # a stride so early trials cover both ends
    return rng.randint(10000, 99999), round(depth, 3)


def summarize(records: list[dict], meta: dict) -> dict:
    rows = {}
    for r in records:
        rows.setdefault((r["context"], r["policy"]), []).append(r)
    table = []
    for (context, policy), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], POLICIES.index(kv[0][1]))):
        table.append({"context": context, "policy": policy, "trials": len(rs),
                      "accuracy": sum(r["passed"] for r in rs) / len(rs),
                      "prefill_s_median": statistics.median(r["prefill_s"] for r in rs),
                      "prefill_cpu_s_median": (statistics.median(r["prefill_cpu_s"] for r in rs if "prefill_cpu_s" in r)
                                               if any("prefill_cpu_s" in r for r in rs) else None),
                      "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs),
                      "kv_cache_mb": max(r["kv_cache_mb"] for r in rs),
                      "depths_failed": sorted(r["depth"] for r in rs if not r["passed"])})
    return {**meta, "rows": table}


def kv_allocations(model, contexts: list[int]) -> dict:
    """MB of KV cache each policy's cache allocates for each context (what new_cache reserves; no forward pass)."""
    a = model.args
    per_token = a.n_layers * a.n_kv_heads * a.head_dim * 2 * model.output.weight.element_size()
    out = {}
    for policy in ORDER:
        p = make_policy(policy, PARAMS)
        out[policy] = {c: round(-(-p.cache_tokens(c + DECODE_TOKENS + 1) // PARAMS.block_size) * PARAMS.block_size
                                * per_token / 2**20) for c in contexts}
    return out


def cpu_cell(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def write_reports(result: dict, out_dir: Path, planned: list[tuple[int, int, str]], done: set) -> None:
    (out_dir / "passkey.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Passkey retrieval per attention policy, past the trained window (CPU)",
        "",
        f"Model {result['model']} (trained window {result['trained_window']} tokens), float32 on CPU, greedy, "
        f"key at spread depths. Prefill in chunks of {result['params']['prefill_chunk']} tokens through the policy "
        "(sparse from the first token); decode through the same policy.",
        f"Policy parameters: {result['params']}.",
        "Positions: sink_window scores the sinks at an in-cache distance (StreamingLLM / LM-Infinite); "
        "block_topk puts sinks and selected blocks at a fixed distance of `window` (InfLLM); dense and "
        "snapkv use true positions (snapkv's prefill is dense, it compresses afterwards), so both stop at "
        "--dense-max: past the trained window they already read nothing at 16K.",
        "Peak RSS: the whole process (model weights included) during the trial; KV cache: what the cache allocated.",
        "The machine was shared with other jobs (2 cores), so wall times are upper bounds; prefill CPU s is the "
        "process's CPU time (one torch thread), which sharing inflates far less ('-': trials logged before it was recorded).",
        "",
        "| context | policy | trials | accuracy | prefill s (median) | prefill CPU s (median) | peak RSS MB | KV cache MB | failed at depths |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['context']} | {row['policy']} | {row['trials']} | {row['accuracy']:.2f} | "
                     f"{row['prefill_s_median']:.1f} | {cpu_cell(row['prefill_cpu_s_median'])} | {row['peak_rss_mb_max']} | {row['kv_cache_mb']} | "
                     f"{', '.join(map(str, row['depths_failed'])) or '-'} |")
    alloc = result.get("kv_cache_mb_allocated", {})
    if alloc:
        contexts = sorted({int(c) for sizes in alloc.values() for c in sizes})
        lines += ["", "KV cache each policy allocates per sequence (MB, float32; sink_window evicts into a bounded pool, "
                  "block_topk keeps every block, here in the same CPU memory):", "",
                  "| policy | " + " | ".join(map(str, contexts)) + " |", "|---|" + "---:|" * len(contexts)]
        for policy, sizes in alloc.items():
            lines.append(f"| {policy} | " + " | ".join(str(sizes[c]) for c in contexts) + " |")
    missing = [job for job in planned if job not in done]
    if missing:
        by = {}
        for _, context, policy in missing:
            by[(context, policy)] = by.get((context, policy), 0) + 1
        lines += ["", "Planned but not run (CPU time): " + ", ".join(f"{p} at {c}: {n}" for (c, p), n in sorted(by.items())) + "."]
    lines += ["", f"Rerun (resumes): `{result['command']}`"]
    (out_dir / "passkey.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--long-trials", type=int, default=5, help="trials at --long-from tokens and longer")
    parser.add_argument("--long-from", type=int, default=65536)
    parser.add_argument("--dense-max", type=int, default=16384, help="longest context for dense and snapkv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--jsonl", type=Path, default=None, help="trial log (default: <out>/passkey.jsonl)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--policies", type=lambda s: tuple(s.split(",")), default=ORDER,
                        help="run only these (e.g. one per process, each with its own --jsonl; merge the logs after)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the reports from the trial log, run nothing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.jsonl or args.out / "passkey.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    done = {(r["index"], r["context"], r["policy"]) for r in records}
    spec = resolve_model(DEFAULT_MODEL)
    local = load_cached(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name)
    trained = local.args.max_seq_len
    local.model.setup_rope(local.device, max_positions=max(args.contexts) + 64)
    meta = {"model": spec.name, "trained_window": trained, "params": PARAMS.settings(),
            "command": "nice -n 10 python benchmarks/passkey.py " + " ".join(
                f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if v not in (None, False) and k not in ("out", "jsonl", "report_only", "policies"))}
    meta["params"].pop("use_triton")
    meta["kv_cache_mb_allocated"] = kv_allocations(local.model, args.contexts)
    planned = plan(args.contexts, args.trials, args.long_trials, args.dense_max, args.long_from, args.policies)
    for index, context, policy in [] if args.report_only else planned:
        if (index, context, policy) in done:
            continue
        key, depth = trial_setup(args.seed, context, index, args.trials if context < args.long_from else args.long_trials)
        ids = build_prompt(local.tokenizer, context, key, depth)
        record = {"index": index, "context": context, "policy": policy, "key": key, "depth": depth, "tokens": len(ids),
                  **trial(local, ids, key, policy)}
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        records.append(record)
        done.add((index, context, policy))
        print(json.dumps(record), flush=True)
        write_reports(summarize(records, meta), args.out, planned, done)
    write_reports(summarize(records, meta), args.out, planned, done)


if __name__ == "__main__":
    main()
