"""How a round key gets its vector (retrieval.round_vectors): a model pass over the round's text, or a pool of vectors the
write embeds anyway; evidence recall with the choice made by leave-one-conversation-out. Writes reports/round_vectors.json
(+ .md).

    python benchmarks/round_vectors.py                    # float vectors (the default runtime), as the choice was made
    python benchmarks/round_vectors.py --verify           # also build an index with the shipped setting and compare hits

A round key (a turn with its neighbours, under the session's date) is the longest text a write embeds: two of a
memory chat's seven key texts, about half its embedding CPU (reports/chat_cost.md). A round's turns already have turn
and statement vectors, so a round vector can be pooled from them (their normalised sum) at no model cost.

The LoCoMo dev conversations and BEAM dev chats are indexed once with encoded round vectors (retrieval.round_vectors
'encoded'); each pooled candidate then replaces every user's round vectors with its pool of the same index's turn or
statement vectors, and every question with evidence is asked under each candidate. `--verify` builds a second index
with the shipped setting ('statements', pooled by the product's write path) and counts the questions whose top 20
differ from the simulated candidate's. Leave-one-conversation-out over the ten dev conversations as in
benchmarks/dense_kinds.py. The four candidates were fixed before the first run (a throwaway script of the same logic).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from _report import write_report  # noqa: E402
from dense_kinds import DATA, METRICS, ask_all, leave_one_out, per_conversation  # noqa: E402

from memstream.benchmarks import beam_eval  # noqa: E402
from memstream.benchmarks.beam import load_beam  # noqa: E402
from memstream.benchmarks.datasets import load_locomo_questions  # noqa: E402
from memstream.benchmarks.retrieval_eval import ingest_locomo, locomo_user, select_questions  # noqa: E402
from memstream.config import load_settings  # noqa: E402
from memstream.memory.core import open_memory  # noqa: E402
from memstream.retrieval import keys as keymod  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache  # noqa: E402
from memstream.retrieval.vector_index import VectorIndex  # noqa: E402

# name -> (the kind whose vectors are pooled, the round's own turn's weight); None: the round's text is embedded.
CANDIDATES: dict[str, tuple[str, float] | None] = {
    "encoded (model pass over the round text)": None,
    "mean of the round's turn vectors": ("turn", 1.0),
    "turn vectors, own turn weighted 2": ("turn", 2.0),
    "mean of the round's statement vectors": ("statement", 1.0),
}
SHIPPED = "mean of the round's statement vectors"


def build(runtime: str, work: str, round_vectors: str, embedders: EmbedderCache):
    settings = load_settings(db_url=f"sqlite:///{work}/{round_vectors}.db", home=f"{work}/{round_vectors}", embedder={"runtime": runtime},
                             agent={"enrich": False}, retrieval={"round_vectors": round_vectors})
    memory = open_memory(settings, embedders=embedders)
    locomo = DATA / "locomo" / "locomo10_dev.json"
    questions = select_questions(load_locomo_questions(locomo))
    asked = ingest_locomo(memory, locomo, {q.sample_id for q in questions})
    chats = load_beam(DATA / "beam" / "chats" / "100K")
    beam_eval._ingest(memory, chats)
    memory.flush()
    items = [("locomo", q.sample_id, locomo_user(q.sample_id), q.question, asked[q.sample_id], set(q.evidence)) for q in questions]
    items += [("beam", c.chat_id, q.namespace, q.question, c.asked_at, set(q.evidence)) for c in chats for q in c.questions if q.evidence]
    texts = sorted({item[3] for item in items})
    memory.retriever.prime_query_cache(texts, memory.retriever.embedder.embed(texts))
    return memory, items


def pool_rounds(memory, users: list[str], source: str, own_weight: float) -> None:
    """Replace each user's round vectors with the pool of the round's turns' `source` vectors (keys.pool's rule, the
    round's own turn counted `own_weight` times)."""
    neighbours = memory.settings.retrieval.round_neighbours
    for user in users:
        index = memory.retriever._users[user]
        ids, vectors = index.dense[source]._all()
        by_turn = {keymod.split_key(key)[0]: vector for key, vector in zip(ids.tolist(), vectors)}
        sessions: dict[object, list] = defaultdict(list)
        for turn in memory.list_turns(user):
            sessions[turn.session_id].append(turn)
        keys, pooled = [], []
        for turns in sessions.values():
            turns.sort(key=lambda t: t.id)
            for i, turn in enumerate(turns):
                window = keymod.round_window(len(turns), i, neighbours)
                keys.append(keymod.key_id(turn.id, "round"))
                pooled.append(keymod.pool([by_turn[turns[j].id] * (own_weight if j == i else 1.0) for j in window]))
        rounds = VectorIndex(index.dim, index.ann_threshold)
        rounds.add(np.array(keys, dtype=np.int64), np.stack(pooled))
        index.dense["round"] = rounds


def hits(retriever, items) -> list[list[str]]:
    return [[h.source_id or str(h.turn.id) for h in retriever.search(user, question, k=20, now=asked_at, mode="memstream").hits]
            for _bench, _conv, user, question, asked_at, _gold in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder-runtime", default="auto", help="auto (float, the default runtime) or onnx-int8")
    parser.add_argument("--verify", action="store_true", help="also build an index with the shipped setting and compare its hits")
    parser.add_argument("--report", default="round_vectors", help="report name under reports/")
    args = parser.parse_args()

    embedders = EmbedderCache()
    verified = None
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        memory, items = build(args.embedder_runtime, work, "encoded", embedders)
        index_s = time.perf_counter() - started
        print(f"indexed in {index_s:.0f} s", flush=True)
        users = sorted({item[2] for item in items})
        by_candidate, simulated_hits = {}, None
        try:
            encoded_rounds = {user: memory.retriever._users[user].dense["round"] for user in users}
            for name, pooled in CANDIDATES.items():
                if pooled is not None:
                    pool_rounds(memory, users, *pooled)
                by_candidate[name] = ask_all(memory.retriever, items, keymod.KINDS)
                if name == SHIPPED and args.verify:
                    simulated_hits = hits(memory.retriever, items)
                for user in users:
                    memory.retriever._users[user].dense["round"] = encoded_rounds[user]
                print(name, {b: round(mean(r["any@10"] for r in by_candidate[name] if r["benchmark"] == b), 4) for b in ("locomo", "beam")}, flush=True)
        finally:
            memory.close()
        if args.verify:
            shipped, _ = build(args.embedder_runtime, work, "statements", embedders)
            try:
                product_hits = hits(shipped.retriever, items)
            finally:
                shipped.close()
            verified = sum(a != b for a, b in zip(simulated_hits, product_hits))
            print(f"verify: {verified} of {len(items)} questions' top 20 differ", flush=True)

    chosen, held_out = leave_one_out(by_candidate)
    conversation_means = {name: mean(per_conversation(rows).values()) for name, rows in by_candidate.items()}
    in_sample_best = max(conversation_means, key=conversation_means.get)
    summary = {name: {bench: {m: round(mean(r[m] for r in rows if r["benchmark"] == bench), 4) for m in METRICS} for bench in ("locomo", "beam")}
               for name, rows in by_candidate.items()}
    held = {bench: {m: round(mean(r[m] for r in rows), 4) for m in METRICS} for bench, rows in held_out.items()}
    picks: dict[str, int] = defaultdict(int)
    for name in chosen.values():
        picks[name] += 1
    table = [{"round vector": name, "LoCoMo any@5": s["locomo"]["any@5"], "LoCoMo any@10": s["locomo"]["any@10"],
              "LoCoMo any@20": s["locomo"]["any@20"], "LoCoMo ndcg@10": s["locomo"]["ndcg@10"], "BEAM any@5": s["beam"]["any@5"],
              "BEAM any@10": s["beam"]["any@10"], "BEAM any@20": s["beam"]["any@20"], "BEAM ndcg@10": s["beam"]["ndcg@10"],
              "mean of 10 conversations any@10": round(conversation_means[name], 4)} for name, s in summary.items()]
    table.append({"round vector": "**leave-one-conversation-out (held-out)**", "LoCoMo any@5": held["locomo"]["any@5"],
                  "LoCoMo any@10": held["locomo"]["any@10"], "LoCoMo any@20": held["locomo"]["any@20"], "LoCoMo ndcg@10": held["locomo"]["ndcg@10"],
                  "BEAM any@5": held["beam"]["any@5"], "BEAM any@10": held["beam"]["any@10"], "BEAM any@20": held["beam"]["any@20"],
                  "BEAM ndcg@10": held["beam"]["ndcg@10"], "mean of 10 conversations any@10": ", ".join(f"{n}: {c} of 10" for n, c in picks.items())})
    check = ("" if verified is None else
             f"Check of the simulation: an index built by the write path with the shipped setting gives a different top 20 on {verified} of "
             f"{len(items)} questions than the simulated candidate. ")
    notes = (
        f"Evidence recall of memstream retrieval (top 20) on {sum(1 for i in items if i[0] == 'locomo')} LoCoMo dev questions (5 conversations) "
        f"and {sum(1 for i in items if i[0] == 'beam')} BEAM dev questions with evidence ids (5 chats of the 100K tier). One index with "
        f"encoded round vectors (embedder runtime {args.embedder_runtime!r}, built in {index_s:.0f} s); each pooled candidate replaces the "
        "round vectors with the normalised sum of the same index's turn or statement vectors of the round's turns (the turn and "
        "its neighbour on each side, retrieval.round_neighbours 1). Every other list is unchanged. "
        f"Leave-one-conversation-out over the 10 conversations: each held-out one gets the candidate with the best mean any@10 over the "
        f"other nine (conversations weigh the same); in-sample (chosen on all ten): {in_sample_best}. The shipped default "
        f"(`retrieval.round_vectors` 'statements') is the in-sample choice, {SHIPPED}; the held-out row is what choosing by this "
        "protocol scores on conversations it did not see. Cost: a pooled round vector needs no model pass (the statement keys are "
        "embedded for their own list, and the earlier turns' statement vectors are read from the index). "
        f"{check}The candidates were fixed before the first run (a throwaway script of the same logic with float vectors, whose "
        "figures the float run of this script repeats). "
        f"Rerun: `python benchmarks/round_vectors.py --embedder-runtime {args.embedder_runtime}{' --verify' if args.verify else ''}"
        f"{'' if args.report == 'round_vectors' else ' --report ' + args.report}`."
    )
    write_report(args.report, {"candidates": {n: list(p) if p else "encoded" for n, p in CANDIDATES.items()}, "summary": summary,
                               "conversation_mean_any@10": {n: round(v, 4) for n, v in conversation_means.items()},
                               "per_conversation_any@10": {n: {c: round(v, 3) for c, v in per_conversation(rows).items()} for n, rows in by_candidate.items()},
                               "held_out": held, "chosen_per_conversation": chosen, "in_sample_choice": in_sample_best,
                               "verify_differing_questions": verified, "index_seconds": round(index_s, 1), "shipped": SHIPPED},
                 table, title="How a round key gets its vector: encoded or pooled", notes=notes)
    print("held out", held, "chosen", chosen)


if __name__ == "__main__":
    main()
