"""mem0's add, timed one turn at a time: run by benchmarks/write_path.py with the python of a separate
virtualenv that has `mem0ai`, `sentence-transformers` and `faiss-cpu` (mem0's dependencies stay out of ours).

    python mem0_add.py TEXTS.json MODEL_DIR WORK_DIR  ->  prints {"add_ms": [...]} as JSON

Same texts and the same MiniLM as memstream's run; `infer=False` (no LLM call: mem0 stores the text as given),
FAISS vector store, history in SQLite under WORK_DIR.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENAI_API_KEY", "unused")  # mem0 builds its default LLM client at start; infer=False never calls it
os.environ.setdefault("MEM0_TELEMETRY", "False")


def main() -> None:
    texts_path, model_dir, work_dir = sys.argv[1:4]
    from mem0 import Memory

    texts = json.loads(open(texts_path, encoding="utf-8").read())
    config = {
        "embedder": {"provider": "huggingface", "config": {"model": model_dir, "embedding_dims": 384}},
        "vector_store": {"provider": "faiss", "config": {"path": os.path.join(work_dir, "faiss"), "embedding_model_dims": 384}},
        "history_db_path": os.path.join(work_dir, "history.db"),
    }
    memory = Memory.from_config(config)
    memory.add([{"role": "user", "content": "warm-up"}], user_id="warmup", infer=False)
    timings = []
    for text in texts:
        t0 = time.perf_counter()
        memory.add([{"role": "user", "content": text}], user_id="alice", infer=False)
        timings.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({"add_ms": timings, "version": __import__("mem0").__version__ if hasattr(__import__("mem0"), "__version__") else None}))


if __name__ == "__main__":
    main()
