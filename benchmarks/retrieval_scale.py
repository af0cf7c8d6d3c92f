"""Retrieval at scale: search latency (query embedding included), ingest throughput, memory,
and the approximate index's recall@10 against exact search, at 10k / 100k / 1M turns.

Synthetic data. Texts come from templates over a few thousand words (names, places,
activities, numbers) for BM25. Vectors: embedding 1M texts with MiniLM on two cores
would take hours, so each turn's vector is a random mix of two real MiniLM embeddings
of template sentences plus Gaussian noise, normalised: clustered like real embeddings,
unlike uniform random vectors (on which every ANN index does badly). Query embedding is
real: each query is embedded with MiniLM, timed, and added to its search time.

One user holds every turn (the worst case: per-user sub-indexes make real searches
smaller). Search = dense (FAISS) + BM25 over turn keys + RRF, as `Retriever.search` in
hybrid mode, minus the database fetch of the k hits (a primary-key read).

Run: python benchmarks/retrieval_scale.py [--scales 10000,100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import write_report  # noqa: E402
from memstream.benchmarks.metrics import percentile  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache  # noqa: E402
from memstream.retrieval.lexical import LexicalIndex, Tokenizer  # noqa: E402
from memstream.retrieval.vector_index import IVF_NPROBE, VectorIndex, set_faiss_threads  # noqa: E402

SCALES = [10_000, 100_000, 1_000_000]
QUERIES = 200
ANN_THRESHOLD = 50_000
BATCH = 10_000
BASE_SENTENCES = 1500
SEED = 0

NAMES = [f"{a}{b}" for a in ("Al", "Be", "Ca", "Da", "El", "Fa", "Gi", "Ha", "Ir", "Jo", "Ka", "Lu", "Ma", "Ni", "Ol", "Pe") for b in ("na", "ro", "la", "vin", "dor", "mi", "sha", "ton", "ric", "wen")]
PLACES = ["Lisbon", "Denver", "Osaka", "Nairobi", "Lyon", "Austin", "Quebec", "Oslo", "Perth", "Cusco", "Galway", "Tartu", "Porto", "Malmo", "Accra", "Hanoi"]
ACTIVITIES = (
    "painted a sunrise|ran a charity race|adopted a kitten|started pottery classes|went camping|read a novel|baked sourdough|"
    "joined a choir|fixed the bike|planted tomatoes|visited the museum|learned to surf|wrote a poem|moved apartments|"
    "got a new job|lost the keys|bought a canoe|watched a documentary|climbed a hill|volunteered at the shelter|"
    "hosted a dinner|finished a marathon|took a photography course|repaired the roof|played chess|built a bookshelf"
).split("|")
FEELINGS = ["it was wonderful", "I was exhausted", "the kids loved it", "it rained all day", "we laughed a lot", "I felt proud", "it was harder than expected", "my friends came along"]
TIMES = ["yesterday", "last week", "on Saturday", "this morning", "two weeks ago", "last month", "in the spring", "after work"]


def synthetic_texts(n: int, rng: np.random.Generator) -> list[str]:
    names = rng.integers(0, len(NAMES), n)
    acts = rng.integers(0, len(ACTIVITIES), n)
    places = rng.integers(0, len(PLACES), n)
    feels = rng.integers(0, len(FEELINGS), n)
    times = rng.integers(0, len(TIMES), n)
    numbers = rng.integers(1, 500, n)
    return [
        f"{NAMES[a]}: I {ACTIVITIES[b]} in {PLACES[c]} {TIMES[e]}, {FEELINGS[d]} (number {f})."
        for a, b, c, d, e, f in zip(names, acts, places, feels, times, numbers)
    ]


def synthetic_vectors(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    first = rng.integers(0, len(base), n)
    second = rng.integers(0, len(base), n)
    mix = rng.uniform(0.2, 0.6, (n, 1)).astype(np.float32)
    out = base[first] + mix * base[second] + rng.normal(0.0, 0.6 / np.sqrt(base.shape[1]), (n, base.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def run_scale(
    n: int, base: np.ndarray, embedder, queries: list[str], rng: np.random.Generator, rrf_k: int = 60, build_threads: int = 2, search_threads: int = 1
) -> dict:
    gc.collect()
    memory_before = rss_mb()
    vectors = index = lexical = None
    dense = VectorIndex(base.shape[1], ann_threshold=ANN_THRESHOLD, use_gpu=False)
    lexical = LexicalIndex(Tokenizer())
    ingest_s = 0.0
    all_vectors = []
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        texts = synthetic_texts(count, rng)
        vectors = synthetic_vectors(base, count, rng)
        ids = (np.arange(start, start + count, dtype=np.int64) + 1) * 8
        t0 = time.perf_counter()
        lexical.add(ids, texts)
        dense.add(ids, vectors)
        ingest_s += time.perf_counter() - t0
        all_vectors.append(vectors)
    memory_after = rss_mb()
    data = np.concatenate(all_vectors)
    # Query vectors: real embeddings of the query texts, timed one by one.
    embed_ms, query_vectors = [], []
    for text in queries:
        t0 = time.perf_counter()
        query_vectors.append(embedder.embed([text])[0])
        embed_ms.append((time.perf_counter() - t0) * 1000)
    search_ms, total_ms = [], []
    # One query at a time runs best on one FAISS thread: with two, OpenMP's barrier waits
    # on a core that other work holds (measured: 10k exact search 0.6 ms on 1 thread, 36 ms on 2 under load).
    set_faiss_threads(search_threads)
    for text, vector, e_ms in zip(queries, query_vectors, embed_ms):
        t0 = time.perf_counter()
        d_ids, _ = dense.search(vector, 100)
        l_ids, _ = lexical.search(text, 100)
        fused: dict[int, float] = {}
        for ranked in (d_ids.tolist(), l_ids.tolist()):
            for rank, key in enumerate(ranked):
                fused[key] = fused.get(key, 0.0) + 1.0 / (rrf_k + rank + 1)
        sorted(fused, key=fused.get, reverse=True)[:10]
        elapsed = (time.perf_counter() - t0) * 1000
        search_ms.append(elapsed)
        total_ms.append(elapsed + e_ms)
    # ANN recall@10 against brute force, on queries near the data (perturbed stored vectors) and on the real query embeddings.
    # Standard recall@10: |ANN top-10 & exact top-10| / 10 over the same stored vectors.
    recall = recall_synthetic = recall_queries = None
    if dense.is_approximate:
        probes = synthetic_vectors(base, 100, rng)
        probe_set = np.concatenate([probes, np.stack(query_vectors[:100])])
        hits = []
        for probe in probe_set:
            exact = (np.argpartition(-(data @ probe), 10)[:10] + 1) * 8
            approx = dense.search(probe, 10)[0]
            hits.append(len(set(exact.tolist()) & set(approx.tolist())) / 10)
        recall, recall_synthetic, recall_queries = float(np.mean(hits)), float(np.mean(hits[:100])), float(np.mean(hits[100:]))
    set_faiss_threads(build_threads)
    inner = faiss.downcast_index(dense._index.index)
    result = {
        "turns": n,
        "index": f"IVFFlat (nlist={inner.nlist}, nprobe={IVF_NPROBE})" if dense.is_approximate else "exact (IndexFlatIP)",
        "search_p50_ms": round(percentile(total_ms, 50), 2),
        "search_p95_ms": round(percentile(total_ms, 95), 2),
        "search_without_embedding_p50_ms": round(percentile(search_ms, 50), 2),
        "query_embedding_p50_ms": round(percentile(embed_ms, 50), 2),
        "ingest_turns_per_s": round(n / ingest_s, 0),
        "memory_mb": round(memory_after - memory_before, 0),
        "ann_recall_at_10": None if recall is None else round(recall, 4),
        "recall_synthetic_probes": None if recall is None else round(recall_synthetic, 4),
        "recall_real_queries": None if recall is None else round(recall_queries, 4),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(result, flush=True)
    del dense, lexical, data, all_vectors
    gc.collect()
    return result


def lexical_choice(n: int, rng: np.random.Generator, queries: list[str]) -> list[dict]:
    """The measurement behind lexical.py: add 1,000 turns to an index of n, then query, for each engine."""
    texts = synthetic_texts(n, rng)
    extra = synthetic_texts(1000, rng)
    rows = []
    # memstream's in-memory index
    index = LexicalIndex()
    index.add(np.arange(n), texts)
    t0 = time.perf_counter()
    for i, text in enumerate(extra):
        index.add([n + i], [text])  # one at a time, as live turns arrive
    add_s = time.perf_counter() - t0
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, 100)
        lat.append((time.perf_counter() - t0) * 1000)
    rows.append({"engine": "in-memory inverted index (memstream)", "corpus": n, "add 1k turns one by one (s)": round(add_s, 3), "query p50 (ms)": round(percentile(lat, 50), 2)})
    # bm25s: fast queries, but adding means re-indexing the corpus
    import bm25s

    retriever = bm25s.BM25()
    t0 = time.perf_counter()
    retriever.index(bm25s.tokenize(texts + extra[:1], stopwords="en", show_progress=False), show_progress=False)
    reindex_s = time.perf_counter() - t0
    tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False)
    lat = []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        retriever.retrieve(bm25s.tokenization.Tokenized(ids=[tokens.ids[i]], vocab=tokens.vocab), k=100, show_progress=False)
        lat.append((time.perf_counter() - t0) * 1000)
    rows.append({"engine": "bm25s (re-index per add)", "corpus": n, "add 1k turns one by one (s)": round(reindex_s * 1000, 1), "query p50 (ms)": round(percentile(lat, 50), 2)})
    # SQLite FTS5 bm25(): incremental, but OR-queries scan long posting lists
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(str(Path(tmp) / "fts.db"))
        db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter')")
        db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(texts))
        db.commit()
        t0 = time.perf_counter()
        for i, text in enumerate(extra):
            db.execute("INSERT INTO t(rowid, body) VALUES (?, ?)", (n + i, text))
            db.commit()
        add_s = time.perf_counter() - t0
        tokenizer = Tokenizer()
        lat = []
        for q in queries:
            words = [w for w in q.lower().replace("?", " ").split() if w.isalnum() and tokenizer(w)]
            match = " OR ".join(f'"{w}"' for w in words) or '"x"'
            t0 = time.perf_counter()
            db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 100", (match,)).fetchall()
            lat.append((time.perf_counter() - t0) * 1000)
        db.close()
    rows.append({"engine": "SQLite FTS5 bm25()", "corpus": n, "add 1k turns one by one (s)": round(add_s, 3), "query p50 (ms)": round(percentile(lat, 50), 2)})
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=",".join(str(s) for s in SCALES))
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--lexical-corpus", type=int, default=100_000, help="corpus size for the BM25 engine comparison (0: skip)")
    parser.add_argument("--name", default="retrieval_scale", help="report name under reports/")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for the query embedder")
    parser.add_argument("--faiss-threads", type=int, default=2, help="OpenMP threads for FAISS index training and adds")
    parser.add_argument("--search-threads", type=int, default=1, help="OpenMP threads for FAISS while timing single-query searches")
    args = parser.parse_args()
    set_faiss_threads(args.faiss_threads)
    rng = np.random.default_rng(SEED)
    embedder = EmbedderCache().get("all-MiniLM-L6-v2", threads=args.threads)
    base = embedder.embed(synthetic_texts(BASE_SENTENCES, rng))
    queries = [f"When did {NAMES[i % len(NAMES)]} {ACTIVITIES[(7 * i) % len(ACTIVITIES)].split(' ', 1)[1]} in {PLACES[i % len(PLACES)]}?" for i in range(args.queries)]
    embedder.embed(queries[:8])  # warm up
    rows = [run_scale(int(n), base, embedder, queries, rng, build_threads=args.faiss_threads, search_threads=args.search_threads) for n in args.scales.split(",") if n.strip()]
    lexical_rows = lexical_choice(args.lexical_corpus, rng, queries[:50]) if args.lexical_corpus else []
    notes = (
        "Synthetic turns, one user. Vectors: mixes of real MiniLM embeddings plus noise (not MiniLM embeddings of the texts; "
        "embedding 1M texts on 2 cores is out of reach); query embeddings are real MiniLM calls, timed and included in "
        "search p50/p95. Search = FAISS + BM25 + RRF over 100 candidates each (hybrid mode, no database fetch). Ingest = "
        "index add of precomputed vectors + BM25 tokenising (embedding excluded; MiniLM embeds ~100-150 turns/s on 2 cores). "
        "memory_mb = RSS growth while building that scale's index. ANN recall@10 = |approximate top-10 & exact top-10| / 10 "
        "over the same stored vectors, on 100 held-out synthetic vectors and 100 real MiniLM query embeddings (split in "
        "the last two recall columns). load_avg_1m = the machine's 1-minute load average after the scale ran (the "
        "machine has 2 cores; above 2, other work shared them and latencies are inflated). "
        f"FAISS: {args.faiss_threads} OpenMP threads to build, {args.search_threads} to search (single queries); torch shares "
        f"that OpenMP pool, so the query embedding ran on {args.search_threads} thread(s) too."
    )
    lexical_table = ""
    if lexical_rows:
        headers = list(lexical_rows[0])
        lexical_table = "\n\n## BM25 engine choice\n\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n" + "\n".join(
            "| " + " | ".join(str(r[h]) for h in headers) + " |" for r in lexical_rows
        ) + "\n\nbm25s cannot add a document without re-indexing: its column is the cost of one re-index times 1,000."
    write_report(
        args.name,
        {"scales": rows, "lexical_engines": lexical_rows, "targets": {"search_p50_ms_at_1M": 25, "ann_recall_at_10": 0.95}},
        rows,
        title="Retrieval at scale",
        notes=notes,
    )
    if lexical_table:
        path = Path(__file__).resolve().parents[1] / "reports" / f"{args.name}.md"
        path.write_text(path.read_text() + lexical_table + "\n")


if __name__ == "__main__":
    main()
