"""Which key kinds get vectors (retrieval.dense_kinds): evidence recall against embedding cost, with the choice made
by leave-one-conversation-out. Writes reports/dense_kinds.json (+ .md).

    python benchmarks/dense_kinds.py                                                  # int8, as CPU servers run
    python benchmarks/dense_kinds.py --embedder-runtime auto --report dense_kinds_float  # float vectors

Every key kind is in the keyword index; a vector costs the embedder a model pass over the key's text, and that pass is
most of what a write costs a CPU server (reports/chat_cost.md). This indexes the LoCoMo dev conversations and the BEAM
dev chats once with a vector for every kind, then asks every question with evidence under each candidate set of
dense kinds (the same index, the dense lists of the other kinds left out, as an index built without them would be).

Leave-one-conversation-out over the ten dev conversations (5 LoCoMo, 5 BEAM): for each held-out conversation the
candidate with the best mean recall_any@10 over the other nine (each conversation weighing the same, so BEAM's 18
questions a chat are not drowned by LoCoMo's 150) is scored on the held-out one. The candidates were fixed before the
first run (a throwaway script of the same logic, whose figures this one repeats); the criterion was written after it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from _report import write_report  # noqa: E402

from memstream.benchmarks import beam_eval  # noqa: E402
from memstream.benchmarks.beam import load_beam  # noqa: E402
from memstream.benchmarks.datasets import load_locomo_questions  # noqa: E402
from memstream.benchmarks.metrics import ndcg, recall_all, recall_any  # noqa: E402
from memstream.benchmarks.retrieval_eval import ingest_locomo, locomo_user, select_questions  # noqa: E402
from memstream.config import load_settings  # noqa: E402
from memstream.memory.core import open_memory  # noqa: E402
from memstream.retrieval import keys as keymod  # noqa: E402
from memstream.retrieval.embedder import EmbedderCache  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CANDIDATES = {
    "every kind": ("turn", "round", "statement", "fact"),
    "no round vectors": ("turn", "statement", "fact"),
    "no statement vectors": ("turn", "round", "fact"),
    "turn and fact vectors only": ("turn", "fact"),
}
SHIPPED = "every kind"
METRICS = ("any@5", "any@10", "any@20", "all@10", "ndcg@10")
TOKEN_SAMPLE = 400


def ask_all(retriever, items, kinds) -> list[dict]:
    retriever.dense_kinds = kinds
    rows = []
    for bench, conversation, user, question, asked_at, gold in items:
        result = retriever.search(user, question, k=20, now=asked_at, mode="memstream")
        got = [hit.source_id or str(hit.turn.id) for hit in result.hits]
        rows.append({"benchmark": bench, "conversation": conversation, "any@5": recall_any(got, gold, 5), "any@10": recall_any(got, gold, 10),
                     "any@20": recall_any(got, gold, 20), "all@10": recall_all(got, gold, 10), "ndcg@10": ndcg(got, gold, 10)})
    return rows


def per_conversation(rows: list[dict], metric: str = "any@10") -> dict[str, float]:
    grouped: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        grouped[f"{row['benchmark']}:{row['conversation']}"].append(row[metric])
    return {conversation: mean(values) for conversation, values in grouped.items()}


def leave_one_out(by_candidate: dict[str, list[dict]]) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """The candidate each held-out conversation gets (chosen on the other nine) and the held-out rows it scores."""
    scores = {name: per_conversation(rows) for name, rows in by_candidate.items()}
    conversations = sorted(next(iter(scores.values())))
    chosen, held_out = {}, defaultdict(list)
    for conversation in conversations:
        others = [c for c in conversations if c != conversation]
        best = max(by_candidate, key=lambda name: (mean(scores[name][c] for c in others), -list(by_candidate).index(name)))
        chosen[conversation] = best
        for row in by_candidate[best]:
            if f"{row['benchmark']}:{row['conversation']}" == conversation:
                held_out[row["benchmark"]].append(row)
    return chosen, held_out


def key_tokens(memory, users: list[str], count_tokens) -> dict[str, float]:
    """Mean tokens of each kind's key text (the embedder's tokenizer, truncated as it truncates), on a sample of turns."""
    tokens: dict[str, list[int]] = defaultdict(list)
    neighbours = memory.settings.retrieval.round_neighbours
    for user in users:
        sessions: dict[object, list] = defaultdict(list)
        for turn in memory.list_turns(user):
            sessions[turn.session_id].append(turn)
        step = max(1, sum(len(s) for s in sessions.values()) // (TOKEN_SAMPLE // len(users)))
        for turns in sessions.values():
            for i in range(0, len(turns), step):
                tokens["turn"].append(count_tokens(keymod.turn_key_text(turns[i])))
                tokens["round"].append(count_tokens(keymod.round_key_text(turns, i, neighbours)))
                tokens["statement"].append(count_tokens(keymod.statement_key_text(turns[i], keymod.other_speaker(turns, i))))
    return {kind: round(mean(values), 1) for kind, values in tokens.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locomo", type=Path, default=DATA / "locomo" / "locomo10_dev.json")
    parser.add_argument("--beam", type=Path, default=DATA / "beam" / "chats" / "100K")
    parser.add_argument("--embedder-runtime", default="onnx-int8", help="onnx-int8 (what a CPU server runs) or auto (float)")
    parser.add_argument("--report", default="dense_kinds", help="report name under reports/")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        settings = load_settings(db_url=f"sqlite:///{work}/m.db", home=work, embedder={"runtime": args.embedder_runtime},
                                 agent={"enrich": False}, retrieval={"dense_kinds": list(keymod.KINDS)})
        embedders = EmbedderCache()
        memory = open_memory(settings, embedders=embedders)
        try:
            started = time.perf_counter()
            locomo_qs = select_questions(load_locomo_questions(args.locomo))
            asked = ingest_locomo(memory, args.locomo, {q.sample_id for q in locomo_qs})
            chats = load_beam(args.beam)
            beam_eval._ingest(memory, chats)
            memory.flush()
            index_s = time.perf_counter() - started
            print(f"indexed in {index_s:.0f} s", flush=True)
            items = [("locomo", q.sample_id, locomo_user(q.sample_id), q.question, asked[q.sample_id], set(q.evidence)) for q in locomo_qs]
            items += [("beam", c.chat_id, q.namespace, q.question, c.asked_at, set(q.evidence)) for c in chats for q in c.questions if q.evidence]
            retriever = memory.retriever
            texts = sorted({item[3] for item in items})
            retriever.prime_query_cache(texts, retriever.embedder.embed(texts))
            by_candidate = {}
            for name, kinds in CANDIDATES.items():
                by_candidate[name] = ask_all(retriever, items, kinds)
                print(name, {m: round(mean(r[m] for r in by_candidate[name] if r["benchmark"] == "locomo"), 4) for m in ("any@10",)},
                      {m: round(mean(r[m] for r in by_candidate[name] if r["benchmark"] == "beam"), 4) for m in ("any@10",)}, flush=True)
            tokenizer = retriever.embedder._model.tokenizer
            limit = int(retriever.embedder._model.max_seq_length)

            def count_tokens(text: str) -> int:
                return min(limit, len(tokenizer(text, truncation=False)["input_ids"]))

            tokens = {
                "locomo": key_tokens(memory, sorted({item[2] for item in items if item[0] == "locomo"}), count_tokens),
                "beam": key_tokens(memory, sorted({item[2] for item in items if item[0] == "beam"}), count_tokens),
            }
        finally:
            memory.close()

    chosen, held_out = leave_one_out(by_candidate)
    in_sample_best = max(by_candidate, key=lambda name: mean(per_conversation(by_candidate[name]).values()))
    ranking = ", ".join(f"{name} {mean(per_conversation(rows).values()):.4f}" for name, rows in
                        sorted(by_candidate.items(), key=lambda item: -mean(per_conversation(item[1]).values())))
    summary = {}
    for name, rows in by_candidate.items():
        summary[name] = {bench: {m: round(mean(r[m] for r in rows if r["benchmark"] == bench), 4) for m in METRICS} for bench in ("locomo", "beam")}
        summary[name]["conversation_mean_any@10"] = round(mean(per_conversation(rows).values()), 4)
        summary[name]["per_conversation_any@10"] = {c: round(v, 3) for c, v in per_conversation(rows).items()}
    held = {bench: {m: round(mean(r[m] for r in rows), 4) for m in METRICS} for bench, rows in held_out.items()}
    shares = {}
    for bench, per_kind in tokens.items():
        for name, kinds in CANDIDATES.items():
            shares.setdefault(name, {})[bench] = round(sum(per_kind[k] for k in kinds if k in per_kind) / sum(per_kind.values()), 3)

    table = []
    for name in CANDIDATES:
        table.append({
            "dense kinds": name,
            "LoCoMo any@5": summary[name]["locomo"]["any@5"], "LoCoMo any@10": summary[name]["locomo"]["any@10"],
            "LoCoMo any@20": summary[name]["locomo"]["any@20"], "LoCoMo ndcg@10": summary[name]["locomo"]["ndcg@10"],
            "BEAM any@5": summary[name]["beam"]["any@5"], "BEAM any@10": summary[name]["beam"]["any@10"],
            "BEAM any@20": summary[name]["beam"]["any@20"], "BEAM ndcg@10": summary[name]["beam"]["ndcg@10"],
            "mean of 10 conversations any@10": summary[name]["conversation_mean_any@10"],
            "embedded tokens per turn, LoCoMo / BEAM (share of every kind)": f"{shares[name]['locomo']} / {shares[name]['beam']}",
        })
    picks = defaultdict(int)
    for name in chosen.values():
        picks[name] += 1
    table.append({
        "dense kinds": "**leave-one-conversation-out (held-out)**",
        "LoCoMo any@5": held["locomo"]["any@5"], "LoCoMo any@10": held["locomo"]["any@10"], "LoCoMo any@20": held["locomo"]["any@20"],
        "LoCoMo ndcg@10": held["locomo"]["ndcg@10"], "BEAM any@5": held["beam"]["any@5"], "BEAM any@10": held["beam"]["any@10"],
        "BEAM any@20": held["beam"]["any@20"], "BEAM ndcg@10": held["beam"]["ndcg@10"], "mean of 10 conversations any@10": None,
        "embedded tokens per turn, LoCoMo / BEAM (share of every kind)": ", ".join(f"{n}: {c} of 10" for n, c in picks.items()),
    })
    notes = (
        f"Evidence recall of memstream retrieval (top 20) on {sum(1 for i in items if i[0] == 'locomo')} LoCoMo dev questions (5 conversations) "
        f"and {sum(1 for i in items if i[0] == 'beam')} BEAM dev questions with evidence ids (5 chats of the 100K tier), under each set of "
        f"key kinds with vectors; one index with every kind's vectors (embedder runtime {args.embedder_runtime!r}, built in {index_s:.0f} s), "
        "the dense lists of the other kinds left out at query time, as an index without their vectors would search. Every kind stays in "
        "the keyword index, and time-window rankings use turn vectors where round keys have none. "
        f"Mean key tokens per turn (embedder tokenizer): LoCoMo {tokens['locomo']}, BEAM {tokens['beam']}; the last column is the share of "
        "those tokens each set embeds (model cost is about linear in tokens). "
        f"Leave-one-conversation-out over the 10 conversations: each held-out one gets the set with the best mean any@10 over the other "
        f"nine (conversations weigh the same); in-sample (chosen on all ten): {in_sample_best} "
        f"({ranking}). The shipped default (`retrieval.dense_kinds`) is {SHIPPED}: the choice of this protocol with float vectors, "
        "the default embedder runtime (reports/dense_kinds_float.md). With int8 vectors (reports/dense_kinds.md) the protocol "
        "picked turn and fact vectors only, by 0.0001 over no round vectors: int8 activations are quantized per model call, so a "
        "vector depends on the texts embedded beside it, and on the 90 BEAM questions that moves recall_any@10 by up to 0.03 (every "
        "kind: 0.511 int8, 0.533 float); the float run decides. In fairness: the candidates were fixed before the first run (a "
        "throwaway script of the same search logic, on the same data, int8, whose figures the int8 report repeats), the criterion "
        "was written after its figures had been seen, and the float run came after both. "
        f"Rerun: `python benchmarks/dense_kinds.py --embedder-runtime {args.embedder_runtime} --report {args.report}`."
    )
    write_report(args.report, {"candidates": {n: list(k) for n, k in CANDIDATES.items()}, "summary": summary, "held_out": held,
                                 "chosen_per_conversation": chosen, "in_sample_choice": in_sample_best, "key_tokens": tokens,
                                 "token_share": shares, "index_seconds": round(index_s, 1), "shipped": SHIPPED},
                 table, title="Which key kinds get vectors: recall against embedding cost", notes=notes)
    print("held out", held, "chosen", chosen)


if __name__ == "__main__":
    main()
