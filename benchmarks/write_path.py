"""The write path: how fast a write is acknowledged, how soon it is found, and what a chat turn costs.

    python benchmarks/write_path.py                       # everything, as in reports/write_path.md
    python benchmarks/write_path.py --quick               # a few minutes: small sizes, short soak
    python benchmarks/write_path.py --mem0-python VENV/bin/python   # add the side-by-side run with mem0

Parts (each writes into reports/write_path.{json,md}):
- add: `Memory.add` of one turn, p50/p99, with 1K, 10K and 100K turns already stored. The stored history is the
  LoCoMo dev conversations repeated to reach the size, with stand-in vectors (`HistoryEmbedder`: MiniLM runs at
  ~100 texts/s on these 2 cores, and a 100K-turn history has 300K keys); the timed turns are new texts, embedded
  by the real MiniLM in the background indexer while the next adds run. Queries always use MiniLM.
- visible: time from `add` returning until the turn is found by dense search (its vectors are in the index), and
  whether keyword search finds it immediately.
- mem0: the same texts through mem0's `add(infer=False)` with the same MiniLM and a FAISS store, in its own
  virtualenv, run right after memstream's (give --mem0-python; skipped and said so otherwise).
- chat: a turn through `MemoryAgent.chat` with the scripted (instant) backend over the 2,760-turn dev history
  (stand-in history vectors, MiniLM query): store, plan, retrieve (query embedding included), compose, store the reply.
- soak: N chat turns on one memory (stored turns get stand-in vectors, queries MiniLM); p50 of the first and
  last 1,000; RSS growth.
- embed: MiniLM texts/s (fp32 and dynamic int8), their cosine agreement; bulk ingest of the five dev
  conversations with embeddings, turns/s (all vectors in the index).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

from memstream.agent.controller import MemoryAgent, TurnOptions  # noqa: E402
from memstream.backends.scripted import ScriptedBackend  # noqa: E402
from memstream.config import load_settings  # noqa: E402
from memstream.memory import NewTurn, open_memory  # noqa: E402
from memstream.memory.importers import load_file  # noqa: E402
from memstream.memory.indexer import on_indexer_thread  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache, resolve_model  # noqa: E402

LOCOMO_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10_dev.json"
SIZES = (1_000, 10_000, 100_000)
ADDS = 300
CHAT_TURNS = 200
SOAK_TURNS = 10_000
BEFORE = {  # the landed main, same machine (issue 17's measurements), for the report's "was" column
    "add_p50_ms": 62.8, "mem0_add_p50_ms": 18.4, "chat_turn_p50_ms": 233.0, "bulk_turns_per_s": 3.9,
}


class HistoryEmbedder:
    """MiniLM for what is timed, stand-in vectors for the stored history, so a 100K-turn history builds in minutes.

    On the indexer thread, texts of the timed writes (they start with LIVE) get real MiniLM vectors and every other
    stored text a pseudo-random unit vector derived from its hash (what an add or a search costs does not depend
    on the values of the vectors already stored). Queries are embedded on the caller's thread: always MiniLM."""

    LIVE = "Update "

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim

    def embed(self, texts):
        import zlib

        if not on_indexer_thread():
            return self.inner.embed(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        live = [i for i, t in enumerate(texts) if self.LIVE in t]
        if live:
            out[live] = self.inner.embed([texts[i] for i in live])
        for i, text in enumerate(texts):
            if i not in live:
                v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim).astype(np.float32)
                out[i] = v / np.linalg.norm(v)
        return out


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dev_sessions():
    return load_file(LOCOMO_DEV, "locomo")


def history(n_turns: int):
    """The dev conversations repeated (each copy its own conversation id, later in time) until n_turns."""
    base = dev_sessions()
    out, total, copy = [], 0, 0
    while total < n_turns:
        for session in base:
            take = session.turns[: n_turns - total]
            if not take:
                break
            shift = timedelta(days=400 * copy)
            turns = [replace(t, event_time=t.event_time + shift if t.event_time else None) for t in take]
            out.append(replace(session, conversation_id=f"{session.conversation_id}#{copy}", turns=turns,
                               started_at=session.started_at + shift if session.started_at else None))
            total += len(take)
        copy += 1
    return out


def fresh_settings(root: Path, name: str):
    return load_settings(db_url=f"sqlite:///{root / name}.db", home=str(root / name), **{"agent.enrich": False})


def new_texts(n: int, tag: str) -> list[str]:
    topics = ["a pottery class", "the marathon", "my new bike", "our trip to Kyoto", "the garden", "a job interview",
              "the concert", "grandma's recipe", "the chess club", "a rescue dog"]
    return [f"Update {tag}-{i}: today I talked about {topics[i % len(topics)]} and it went well (note {i})." for i in range(n)]


def measure_add(root: Path, embedder, sizes, adds: int) -> tuple[list[dict], list[str]]:
    rows = []
    texts = new_texts(adds, "add")
    for size in sizes:
        settings = fresh_settings(root, f"add{size}")
        with open_memory(settings, embedder) as memory:
            t0 = time.perf_counter()
            memory.ingest("history", history(size))
            memory.flush()
            build_s = time.perf_counter() - t0
            add_ms, visible_ms, keyword_hits = [], [], 0
            for i, text in enumerate(texts):
                t0 = time.perf_counter()
                stored = memory.add("alice", "live", [NewTurn("user", text)])
                add_ms.append((time.perf_counter() - t0) * 1000)
                if i % 10 == 0:  # every 10th: when is it found densely, and is it found by keyword at once?
                    keyword_hits += any(h.turn.id == stored[0].id for h in memory.search("alice", f"note {i}", k=5, mode="bm25").hits)
                    memory.retriever.wait_until_embedded("alice", 30)
                    visible_ms.append((time.perf_counter() - t0) * 1000)
                    dense = memory.search("alice", text, k=1, mode="dense")
                    assert dense.hits and dense.hits[0].turn.id == stored[0].id, "embedded turn not found by dense search"
            checked = len(range(0, adds, 10))
            rows.append({
                "stored_turns": size, "adds": adds, "history_build_s": round(build_s, 1),
                "add_p50_ms": percentile(add_ms, 50), "add_p99_ms": percentile(add_ms, 99), "add_max_ms": max(add_ms),
                "dense_visible_p50_ms": percentile(visible_ms, 50), "dense_visible_p95_ms": percentile(visible_ms, 95),
                "keyword_found_at_once": f"{keyword_hits}/{checked}",
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows, texts


def measure_mem0(python: str, texts: list[str], root: Path) -> dict:
    path = root / "mem0_texts.json"
    path.write_text(json.dumps(texts))
    work = root / "mem0"
    work.mkdir()
    script = Path(__file__).resolve().parent / "peers" / "mem0_add.py"
    done = subprocess.run([python, str(script), str(path), resolve_model("all-MiniLM-L6-v2"), str(work)],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"mem0 run failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    add_ms = result["add_ms"]
    return {"mem0_version": result.get("version"), "adds": len(add_ms),
            "add_p50_ms": percentile(add_ms, 50), "add_p99_ms": percentile(add_ms, 99)}


def memstream_add_same_texts(root: Path, embedder, texts: list[str]) -> dict:
    """memstream's add of the same texts on an empty memory (as mem0's run starts empty), back to back with mem0."""
    with open_memory(fresh_settings(root, "side"), embedder) as memory:
        memory.add("warmup", "c", [NewTurn("user", "warm-up")])
        add_ms = []
        for text in texts:
            t0 = time.perf_counter()
            memory.add("alice", "live", [NewTurn("user", text)])
            add_ms.append((time.perf_counter() - t0) * 1000)
        memory.flush()
    return {"adds": len(add_ms), "add_p50_ms": percentile(add_ms, 50), "add_p99_ms": percentile(add_ms, 99)}


def questions(n: int) -> list[str]:
    data = json.loads(LOCOMO_DEV.read_text())
    qs = [q["question"] for sample in data for q in sample["qa"]]
    return (qs * (n // len(qs) + 1))[:n]


def measure_chat(root: Path, embedder, turns: int) -> dict:
    settings = fresh_settings(root, "chat")
    with open_memory(settings, embedder) as memory:
        memory.ingest("alice", dev_sessions())
        memory.flush()
        agent = MemoryAgent(memory, ScriptedBackend(), settings, enrich=False)
        totals, parts = [], {"store": [], "plan": [], "retrieve": [], "compose": []}
        for i, question in enumerate(questions(turns)):
            reply = agent.chat(question, user="alice", conversation="live", options=TurnOptions())
            totals.append(reply.timings["total"] * 1000)
            for key in parts:
                parts[key].append(reply.timings.get(key, 0.0) * 1000)
        agent.close()
        stored = memory.count_turns("alice")
    return {"history_turns": stored - 2 * turns, "turns": turns, "p50_ms": percentile(totals, 50), "p95_ms": percentile(totals, 95),
            **{f"{k}_p50_ms": percentile(v, 50) for k, v in parts.items()}}


def soak(root: Path, embedder, turns: int) -> dict:
    settings = fresh_settings(root, "soak")
    with open_memory(settings, embedder) as memory:
        agent = MemoryAgent(memory, ScriptedBackend(), settings, enrich=False)
        texts = questions(turns)
        totals = []
        rss_start = rss_mb()
        for i, text in enumerate(texts):
            reply = agent.chat(f"{text} ({i})", user="soak", conversation=f"c{i // 500}")
            totals.append(reply.timings["total"] * 1000)
        rss_end = rss_mb()
        agent.close()
    window = min(1000, turns // 2)
    first, last = statistics.median(totals[:window]), statistics.median(totals[-window:])
    return {"turns": turns, "window": window, "first_p50_ms": first, "last_p50_ms": last, "last_over_first": last / first,
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1), "rss_growth_mb": round(rss_end - rss_start, 1)}


def embedding_throughput(inner, texts: list[str]) -> dict:
    import torch

    model = inner._model
    t0 = time.perf_counter()
    fp32 = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    fp32_rate = len(texts) / (time.perf_counter() - t0)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    t0 = time.perf_counter()
    int8 = quantized.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    int8_rate = len(texts) / (time.perf_counter() - t0)
    cosine = np.sum(fp32 * int8, axis=1)
    result = {"texts": len(texts), "fp32_texts_per_s": fp32_rate, "int8_texts_per_s": int8_rate,
              "int8_cosine_to_fp32_mean": float(cosine.mean()), "int8_cosine_to_fp32_p5": float(np.percentile(cosine, 5))}
    if inner.runtime == "onnx":  # the default CPU path: the same fp32 model on ONNX Runtime
        t0 = time.perf_counter()
        onnx = inner.embed(texts)
        result["onnx_texts_per_s"] = len(texts) / (time.perf_counter() - t0)
        result["onnx_max_abs_diff_to_torch"] = float(np.abs(onnx - fp32).max())
    return result


def int8_recall_check(root: Path, inner) -> dict:
    """LoCoMo dev retrieval-only recall_any@10 with the fp32 model and with its int8 copy (the faster path is kept
    only if recall moves by at most 0.005)."""
    import copy

    import torch

    from memstream.benchmarks.retrieval_eval import evaluate_locomo_retrieval

    out = {}
    for label in ("fp32", "int8"):
        embedder = inner
        if label == "int8":
            embedder = copy.copy(inner)
            embedder._model = torch.ao.quantization.quantize_dynamic(inner._model, {torch.nn.Linear}, dtype=torch.qint8)
            embedder._onnx, embedder.runtime = None, "torch"  # the quantised copy runs on torch
        cache = EmbedderCache()
        cache.provide(embedder)  # the benchmark hands its own model to the evaluation
        settings = load_settings(home=str(root / f"recall-{label}"))
        results, _rows = evaluate_locomo_retrieval(LOCOMO_DEV, settings, root / f"recall-{label}", systems=["memstream"],
                                                   ablation=False, embedders=cache)
        out[f"{label}_recall_any@10"] = results["systems"]["memstream"]["recall_any@10"]
    out["delta"] = out["int8_recall_any@10"] - out["fp32_recall_any@10"]
    out["int8_kept"] = abs(out["delta"]) <= 0.005
    return out


def bulk_ingest(root: Path, inner) -> dict:
    sessions = dev_sessions()
    total = sum(len(s.turns) for s in sessions)
    with open_memory(fresh_settings(root, "bulk"), inner) as memory:
        t0 = time.perf_counter()
        memory.ingest("bulk", sessions)
        committed = time.perf_counter() - t0
        memory.flush()
        indexed = time.perf_counter() - t0
        assert memory.retriever.indexed_turns("bulk") == total
    return {"turns": total, "committed_s": round(committed, 2), "all_vectors_in_s": round(indexed, 1),
            "turns_per_s": total / indexed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes 1K/10K, 100 adds, 50 chat turns, 2,000-turn soak")
    parser.add_argument("--mem0-python", help="python of a virtualenv with mem0ai, sentence-transformers, faiss-cpu")
    parser.add_argument("--parts", default="add,mem0,chat,soak,embed,recall", help="comma-separated subset to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    sizes, adds, chat_turns, soak_turns = (SIZES[:2], 100, 50, 2_000) if args.quick else (SIZES, ADDS, CHAT_TURNS, SOAK_TURNS)
    inner = EmbedderCache().get("all-MiniLM-L6-v2")
    embedder = HistoryEmbedder(inner)
    results: dict = {"config": {"sizes": list(sizes), "adds": adds, "chat_turns": chat_turns, "soak_turns": soak_turns,
                                "torch_threads": __import__("torch").get_num_threads(),
                                "load_average_at_start": os.getloadavg()[0]},
                     "before": BEFORE}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = new_texts(adds, "side")
        if "add" in parts:
            results["add"], _ = measure_add(root, embedder, sizes, adds)
            rows += [{"part": f"add @ {r['stored_turns']:,} stored", "p50_ms": r["add_p50_ms"], "p99_ms": r["add_p99_ms"],
                      "note": f"dense-visible p50 {r['dense_visible_p50_ms']:.0f} / p95 {r['dense_visible_p95_ms']:.0f} ms; keyword at once {r['keyword_found_at_once']}"}
                     for r in results["add"]]
        if "mem0" in parts:
            results["memstream_side_by_side"] = memstream_add_same_texts(root, embedder, texts)
            rows.append({"part": "memstream add, empty store (side by side)", "p50_ms": results["memstream_side_by_side"]["add_p50_ms"],
                         "p99_ms": results["memstream_side_by_side"]["add_p99_ms"], "note": "same texts as mem0, run just before it"})
            if args.mem0_python:
                results["mem0"] = measure_mem0(args.mem0_python, texts, root)
                ratio = results["mem0"]["add_p50_ms"] / results["memstream_side_by_side"]["add_p50_ms"]
                results["mem0"]["memstream_speedup_p50"] = ratio
                rows.append({"part": f"mem0 {results['mem0']['mem0_version']} add(infer=False)", "p50_ms": results["mem0"]["add_p50_ms"],
                             "p99_ms": results["mem0"]["add_p99_ms"], "note": f"memstream {ratio:.1f}x faster at p50"})
            else:
                results["mem0"] = "skipped: no --mem0-python given"
        if "chat" in parts:
            results["chat"] = measure_chat(root, embedder, chat_turns)
            c = results["chat"]
            rows.append({"part": f"chat turn, scripted backend, {c['history_turns']:,}-turn history", "p50_ms": c["p50_ms"], "p99_ms": None,
                         "note": f"p95 {c['p95_ms']:.0f} ms; store {c['store_p50_ms']:.1f}, retrieve {c['retrieve_p50_ms']:.1f} ms (p50)"})
        if "soak" in parts:
            results["soak"] = soak(root, embedder, soak_turns)
            s = results["soak"]
            rows.append({"part": f"soak, {s['turns']:,} chat turns", "p50_ms": s["last_p50_ms"], "p99_ms": None,
                         "note": f"first {s['window']} p50 {s['first_p50_ms']:.1f} ms, last {s['last_p50_ms']:.1f} ms ({s['last_over_first']:.2f}x); RSS +{s['rss_growth_mb']} MB"})
        if "embed" in parts:
            sample = [t.text for s in dev_sessions() for t in s.turns][:1000]
            results["embed"] = embedding_throughput(inner, sample)
            results["bulk_ingest"] = bulk_ingest(root, inner)
            if "recall" in parts:
                results["int8_recall"] = int8_recall_check(root, inner)
            e, b = results["embed"], results["bulk_ingest"]
            rows.append({"part": "MiniLM fp32 / int8 texts/s", "p50_ms": None, "p99_ms": None,
                         "note": f"{e['fp32_texts_per_s']:.0f} / {e['int8_texts_per_s']:.0f} texts/s; int8 cosine to fp32 {e['int8_cosine_to_fp32_mean']:.3f} (p5 {e['int8_cosine_to_fp32_p5']:.3f})"})
            if "onnx_texts_per_s" in e:
                rows.append({"part": "MiniLM fp32 on ONNX Runtime (the default on a CPU)", "p50_ms": None, "p99_ms": None,
                             "note": f"{e['onnx_texts_per_s']:.0f} texts/s, max abs difference to torch {e['onnx_max_abs_diff_to_torch']:.1e}"})
            rows.append({"part": "bulk ingest, 5 dev conversations", "p50_ms": None, "p99_ms": None,
                         "note": f"{b['turns']} turns committed in {b['committed_s']} s, all vectors in after {b['all_vectors_in_s']} s: {b['turns_per_s']:.1f} turns/s (was {BEFORE['bulk_turns_per_s']})"})
    if "int8_recall" in results:
        r = results["int8_recall"]
        rows.append({"part": "int8 recall check (LoCoMo dev, recall_any@10)", "p50_ms": None, "p99_ms": None,
                     "note": f"fp32 {r['fp32_recall_any@10']:.3f}, int8 {r['int8_recall_any@10']:.3f} (delta {r['delta']:+.3f}): "
                             + ("int8 within 0.005" if r["int8_kept"] else "int8 moves recall by more than 0.005: fp32 kept")})
    results["config"]["load_average_at_end"] = os.getloadavg()[0]
    notes = ("Rerun: `python benchmarks/write_path.py --mem0-python <venv>/bin/python` (see the module docstring). "
             "The machine has 2 cores; the load average at start and end is in the JSON: read ratios when it is high. "
             "Earlier figures (landed main, issue 17): add p50 62.8 ms, mem0 18.4 ms, chat turn p50 233 ms, bulk 3.9 turns/s.")
    write_report("write_path", results, rows, title="Write path: add, visibility, chat turn, soak, embedding", notes=notes)


if __name__ == "__main__":
    main()
