"""What one memory chat costs in CPU, by part, without HTTP: where the server's time per request goes.

A MemoryAgent on a fresh database (SQLite; with --pg-url also PostgreSQL and its database-resident index),
the int8 MiniLM a CPU server is advised to use, enrichment off, and a scripted backend answering at once
with the stub upstream's reply (benchmarks/stub_upstream.py), every question a text of its own: so what is measured is memstream's own work per
memory chat (storing the user's turn, retrieval, the prompt, storing the reply, and embedding their keys). The
chats run one after another over 64 seeded users, as service_load.py's clients ask them.

Per chat: process CPU (every thread), wall time, and the parts: embedding (key texts and query, its calls and
texts), store reads and writes, search. Then a probe of batching: whether embedding several adds' key texts
in one model call is cheaper per add than one call each (the case for batching across concurrent requests),
and the same for queries. Writes reports/chat_cost.{json,md}.

    python benchmarks/chat_cost.py                  # SQLite, 300 chats
    python benchmarks/chat_cost.py --pg-url postgresql+psycopg://USER@HOST:PORT/DB
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from _report import write_report  # noqa: E402

from memstream.agent.controller import MemoryAgent  # noqa: E402
from memstream.backends.scripted import ScriptedBackend  # noqa: E402
from memstream.config import load_settings  # noqa: E402
from memstream.memory.core import open_memory  # noqa: E402
from memstream.memory.model import NewTurn  # noqa: E402
from memstream.memory.store import MemoryStore  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache  # noqa: E402

USERS = 64
TOPICS = "hiking cello sourdough chess kayaking pottery astronomy gardening salsa climbing".split()
RUNTIME = "onnx-int8"


class PartTimer:
    """Wall seconds and calls per named part, summed over every thread that runs it (parts do not nest)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.texts = 0

    def wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - started
                self.calls[part] += 1

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.texts = 0


def measure(db_url: str, home: Path, chats: int, embedders: EmbedderCache, repeated: bool = False, retrieval: dict | None = None) -> dict:
    """`repeated`: the questions are ten texts asked over and over (service_load.py's traffic before it made every
    question its own), for comparison. `retrieval`: settings under `retrieval` (dense_kinds, round_vectors)."""
    settings = load_settings(db_url=db_url, home=str(home), embedder={"runtime": RUNTIME}, agent={"enrich": False},
                             retrieval=retrieval or {})
    memory = open_memory(settings, embedders=embedders)
    timer = PartTimer()
    embedder = memory.retriever.embedder
    embed = embedder.embed

    def counted(texts):
        timer.texts += len(texts)
        return embed(texts)

    embedder.embed = counted
    timer.wrap(embedder, "embed", "embedding")
    originals = {name: getattr(MemoryStore, name) for name in ("_read", "_retry")}
    timer.wrap(MemoryStore, "_read", "store reads")
    timer.wrap(MemoryStore, "_retry", "store writes")
    try:
        for u in range(USERS):
            memory.add(f"user{u}", "seed", [NewTurn("user", f"I took up {topic} in {2015 + i}.") for i, topic in enumerate(TOPICS)])
        memory.flush(300)
        # Every question is its own text (chat i asks about hobby i of its user's ten, and says which chat it is):
        # repeated texts hit the query-vector cache and are embedded once per indexer batch, which flatters the figure.
        questions = [f"When did I take up {TOPICS[i % len(TOPICS)]}?" + ("" if repeated else f" This is chat {i}.") for i in range(chats)]
        replies = [f"Stub reply about: {question[:60]}" for question in questions]  # the stub upstream's reply
        agent = MemoryAgent(memory, ScriptedBackend(replies), settings, enrich=False)
        timer.wrap(memory, "search", "search (query embedding included)")
        timer.reset()
        cpu, wall = time.process_time(), time.perf_counter()
        for i, question in enumerate(questions):
            agent.chat(question, user=f"user{i % USERS}", conversation="chat")
        memory.flush(300)  # the background indexer's work belongs to the chats that queued it
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        agent.close()
    finally:
        for name, original in originals.items():
            setattr(MemoryStore, name, original)
        del embedder.embed  # the shared model's own method again, for the next run
        memory.close()
    per_chat = {part: round(1000 * seconds / chats, 1) for part, seconds in sorted(timer.seconds.items())}
    return {
        "chats": chats,
        "process_cpu_ms_per_chat": round(1000 * cpu / chats, 1),
        "wall_ms_per_chat": round(1000 * wall / chats, 1),
        "parts_ms_per_chat": per_chat,
        "calls_per_chat": {part: round(n / chats, 2) for part, n in sorted(timer.calls.items())},
        "embedded_texts_per_chat": round(timer.texts / chats, 2),
    }


def batching_probe(home: Path, embedders: EmbedderCache, rounds: int = 3) -> dict:
    """CPU per add when the key texts of 1, 4 or 16 adds go to the model in one call; per query alone or 8 at once."""
    settings = load_settings(home=str(home), embedder={"runtime": RUNTIME})
    embedder = embedders.for_settings(settings.embedder)
    # One add's keys with encoded round vectors (retrieval/keys.py): the turn, its round with neighbours, its statement.
    adds = [[f"user: When did I take up topic {i}? I was wondering about it today.",
             f"[7 May 2023] assistant: Stub reply about: When did I take up cello?\nuser: When did I take up topic {i}?\n"
             f"assistant: Stub reply about: When did I take up topic {i}?",
             f"user asked when user took up topic {i}, on 7 May 2023."] for i in range(64)]
    embedder.embed(adds[0])  # warm
    per_add = {}
    for group in (1, 4, 16):
        started = time.process_time()
        for _ in range(rounds):
            for g in range(0, len(adds), group):
                embedder.embed([text for add in adds[g:g + group] for text in add])
        per_add[str(group)] = round(1000 * (time.process_time() - started) / (rounds * len(adds)), 2)
    queries = [f"When did I take up topic {i}?" for i in range(96)]
    started = time.process_time()
    for query in queries:
        embedder.embed([query])
    alone = 1000 * (time.process_time() - started) / len(queries)
    started = time.process_time()
    for g in range(0, len(queries), 8):
        embedder.embed(queries[g:g + 8])
    batched = 1000 * (time.process_time() - started) / len(queries)
    return {"cpu_ms_per_add_by_adds_per_call": per_add, "cpu_ms_per_query_alone": round(alone, 2), "cpu_ms_per_query_8_per_call": round(batched, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--pg-url", default=None, help="also measure on this PostgreSQL database (its tables are added to)")
    parser.add_argument("--dense-kinds", default="", help="retrieval.dense_kinds, comma-separated (e.g. turn,fact); '' keeps the default")
    parser.add_argument("--round-vectors", default="", help="retrieval.round_vectors (statements or encoded); '' keeps the default")
    parser.add_argument("--report", default="chat_cost", help="report name under reports/")
    args = parser.parse_args()
    retrieval = {**({"dense_kinds": args.dense_kinds.split(",")} if args.dense_kinds else {}),
                 **({"round_vectors": args.round_vectors} if args.round_vectors else {})}
    runs = []
    embedders = EmbedderCache()  # one model for every run (each opens its own memory on it)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        runs.append({"database": "SQLite", **measure(f"sqlite:///{home / 'chat_cost.db'}", home, args.chats, embedders, retrieval=retrieval)})
        print(runs[-1], flush=True)
        runs.append({"database": "SQLite, ten repeated questions", **measure(f"sqlite:///{home / 'repeated.db'}", home, args.chats, embedders, repeated=True, retrieval=retrieval)})
        print(runs[-1], flush=True)
        if args.pg_url:
            runs.append({"database": "PostgreSQL (database index)", **measure(args.pg_url, home, args.chats, embedders, retrieval=retrieval)})
            print(runs[-1], flush=True)
        probe = batching_probe(home, embedders)
    print(probe)
    rows = [{"database": r["database"], "process CPU ms/chat": r["process_cpu_ms_per_chat"], "wall ms/chat": r["wall_ms_per_chat"],
             "embedded texts/chat": r["embedded_texts_per_chat"],
             **{f"{part} ms/chat": ms for part, ms in r["parts_ms_per_chat"].items()}} for r in runs]
    batch = probe["cpu_ms_per_add_by_adds_per_call"]
    notes = (f"{args.chats} memory chats one after another over {USERS} seeded users, each question a text of its own (the row "
             "'ten repeated questions' asks ten texts over and over, as benchmarks/service_load.py's clients did before), in process "
             "(no HTTP), scripted backend "
             f"answering at once, embedder runtime {RUNTIME!r}, retrieval.dense_kinds {args.dense_kinds or 'every kind (the default)'}, "
             f"retrieval.round_vectors {args.round_vectors or 'statements (the default)'}, enrichment off. Parts are wall time inside them summed over "
             "threads (the background indexer embeds while the next chat runs), so they can add up to more than the wall "
             "time; process CPU counts every thread. Batching probe (CPU): embedding the key texts of 1 / 4 / 16 adds (turn, encoded round, "
             "statement: fixed texts, so the probe also gauges the machine's speed between runs) per "
             f"model call costs {batch['1']} / {batch['4']} / {batch['16']} ms per add; a query alone "
             f"{probe['cpu_ms_per_query_alone']} ms, 8 per call {probe['cpu_ms_per_query_8_per_call']} ms each. "
             f"Rerun: `python benchmarks/chat_cost.py [--pg-url URL]{' --dense-kinds ' + args.dense_kinds if args.dense_kinds else ''}"
             f"{' --round-vectors ' + args.round_vectors if args.round_vectors else ''}{' --report ' + args.report if args.report != 'chat_cost' else ''}`.")
    write_report(args.report, {"dense_kinds": args.dense_kinds or "every kind", "round_vectors": args.round_vectors or "statements", "runs": runs, "batching": probe}, rows, title="What a memory chat costs, by part (in process)", notes=notes)


if __name__ == "__main__":
    main()
