"""`memstream bench beam`: BEAM chats through the same retrievers, evidence recall per ability, and (with a judge)
answers scored on each question's rubric.

Without a judge nothing is generated: the run reports retrieval (recall_any / recall_all @5 and @10 against
`source_chat_ids`, per ability and overall), the tokens each system's evidence costs, and one model-free answer
proxy (how much of the rubric's required content is present, word for word, in the top-10 evidence). The report
says that no answer was scored. With a judge, every system answers each question through the agent and the judge
checks each rubric item (yes/no); a question's score is the share of its items met.

Each chat is its own user namespace; questions are asked the day after the chat's last batch.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from memstream.agent import prompts
from memstream.agent.compose import evidence_lines
from memstream.backends.base import BackendError, ChatBackend
from memstream.benchmarks.beam import ABILITIES, BeamChat, BeamQuestion, load_beam
from memstream.benchmarks.judge import JudgeError, parse_verdict
from memstream.benchmarks.metrics import percentile, recall_all, recall_any
from memstream.benchmarks.scoring import normalize_answer
from memstream.retrieval.embedder import recorded_name

SYSTEMS = ("memstream", "hybrid", "bm25", "dense")
KS = (5, 10)
DEPTH = 10
ANSWER_TOKENS = 256
_RUBRIC_TARGET = re.compile(r"should (?:state|contain|mention|include|say)\s*:\s*(.+)$", re.I | re.S)
_STOP = frozenset("a an the of to in on and or for with is are was were be it that this by as at from".split())


@dataclass
class BeamRunConfig:
    data: str
    systems: tuple[str, ...] = SYSTEMS
    limit: int | None = None
    """At most this many chats."""
    top_k: int = DEPTH
    judge: str | None = None
    backend: str | None = None


def rubric_target(item: str) -> str:
    """The content a rubric item asks for ("LLM response should state: 19 days" -> "19 days")."""
    match = _RUBRIC_TARGET.search(item)
    return (match.group(1) if match else item).strip()


def content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in _STOP]


def rubric_recall(rubric: Sequence[str], evidence_text: str) -> float | None:
    """Mean over rubric items of the share of the item's content words found in the evidence (None: no items)."""
    present = set(content_words(evidence_text))
    scores = []
    for item in rubric:
        words = content_words(rubric_target(item))
        if words:
            scores.append(sum(w in present for w in words) / len(words))
    return sum(scores) / len(scores) if scores else None


def judge_rubric(backend: ChatBackend, question: str, response: str, rubric: Sequence[str]) -> tuple[float, list[bool]]:
    """Each rubric item checked by the judge; returns (share met, verdicts). Raises JudgeError."""
    verdicts = []
    for item in rubric:
        message = prompts.JUDGE_RUBRIC.format(question=question, response=response, item=item)
        try:
            reply = backend.complete([{"role": "user", "content": message}], max_tokens=8, temperature=0.0)
        except BackendError as exc:
            raise JudgeError(f"judge backend failed: {exc}") from exc
        verdicts.append(parse_verdict(reply))
    return (sum(verdicts) / len(verdicts) if verdicts else 0.0), verdicts


def _ingest(store, chats: Sequence[BeamChat]) -> None:
    for chat in chats:
        user = chat.questions[0].namespace if chat.questions else f"beam:{chat.chat_id}"
        if not store.has_user(user):
            store.ingest(user, chat.sessions, atomic=True)


def evaluate_beam(
    config: BeamRunConfig,
    settings,
    work_dir: Path,
    *,
    count_tokens: Callable[[str], int],
    answer_backend: ChatBackend | None = None,
    judge_backend: ChatBackend | None = None,
    embedders=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run BEAM; returns (results, per-question rows). A judge needs an answer backend."""
    from memstream.memory.core import open_memory

    say = progress or (lambda message: None)
    unknown = set(config.systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    if judge_backend is not None and answer_backend is None:
        raise ValueError("a judged BEAM run needs an answer backend")
    chats = load_beam(config.data, config.limit)
    work_dir.mkdir(parents=True, exist_ok=True)
    memory = open_memory(settings.model_copy(update={"db_url": f"sqlite:///{work_dir / 'beam.db'}"}), embedders=embedders)
    try:
        started = time.perf_counter()
        _ingest(memory, chats)
        memory.flush()  # every vector in before the first question
        retriever = memory.retriever
        say(f"indexed {sum(c.message_count for c in chats)} messages of {len(chats)} chats in {time.perf_counter() - started:.1f}s")
        agent = None
        if judge_backend is not None:
            from memstream.agent.controller import MemoryAgent

            agent = MemoryAgent(memory, answer_backend, settings, enrich=False)
        history_tokens = {}
        for chat in chats:
            turns = memory.list_turns(chat.questions[0].namespace) if chat.questions else []
            history_tokens[chat.chat_id] = sum(count_tokens(line) + 1 for line in evidence_lines(turns))
        rows: list[dict[str, Any]] = []
        for chat in chats:
            for question in chat.questions:
                for system in config.systems:
                    rows.append(_ask(retriever, agent, judge_backend, chat, question, system, config.top_k, count_tokens))
            say(f"chat {chat.chat_id}: {len(chat.questions)} questions x {len(config.systems)} systems")
        results = summarise(rows, config, chats, history_tokens, settings)
        return results, rows
    finally:
        memory.close()


def _ask(retriever, agent, judge_backend, chat: BeamChat, question: BeamQuestion, system: str, top_k: int, count_tokens) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = retriever.search(question.namespace, question.question, k=top_k, now=chat.asked_at, mode=system)
    latency = (time.perf_counter() - t0) * 1000.0
    hits = result.hits
    retrieved = [h.source_id or str(h.turn.id) for h in hits]
    lines = evidence_lines([h.turn for h in hits])
    row: dict[str, Any] = {
        "question_id": question.question_id,
        "chat": chat.chat_id,
        "ability": question.ability,
        "system": system,
        "retrieved": retrieved,
        "evidence": question.evidence,
        "evidence_tokens": sum(count_tokens(line) + 1 for line in lines),
        "latency_ms": round(latency, 2),
        "rubric_recall@10": rubric_recall(question.rubric, "\n".join(h.turn.text for h in hits[:10])),
    }
    if question.evidence:
        gold = set(question.evidence)
        for k in KS:
            row[f"any@{k}"] = recall_any(retrieved, gold, k)
            row[f"all@{k}"] = recall_all(retrieved, gold, k)
    if agent is not None:
        from memstream.agent.controller import AgentError, TurnOptions

        options = TurnOptions(
            retrieval_mode=system, plan=system == "memstream", remember=False, short_answer=False, top_k=top_k, max_tokens=ANSWER_TOKENS
        )
        try:
            reply = agent.chat(question.question, user=question.namespace, conversation="bench", at=chat.asked_at, options=options)
            row.update(prediction=reply.text, prompt_tokens=reply.prompt_tokens, error=None)
            row["judge"], row["judge_verdicts"] = judge_rubric(judge_backend, question.question, reply.text, question.rubric)
        except (AgentError, BackendError) as exc:
            row.update(prediction="", prompt_tokens=0, error=str(exc), judge=None)
        except JudgeError as exc:
            row.update(judge=None, judge_error=str(exc))
    return row


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _block(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if "any@5" in r]
    out: dict[str, Any] = {"n": len(rows), "n_with_evidence": len(scored)}
    for k in KS:
        out[f"recall_any@{k}"] = _mean([r[f"any@{k}"] for r in scored])
        out[f"recall_all@{k}"] = _mean([r[f"all@{k}"] for r in scored])
    out["rubric_recall@10"] = _mean([r["rubric_recall@10"] for r in rows])
    out["evidence_tokens"] = _mean([r["evidence_tokens"] for r in rows])
    if any("judge" in r for r in rows):
        out["judge"] = _mean([r.get("judge") for r in rows])
        out["judge_failures"] = sum(1 for r in rows if r.get("judge") is None)
    return out


def summarise(rows, config: BeamRunConfig, chats: Sequence[BeamChat], history_tokens: dict[str, int], settings) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for system in config.systems:
        mine = [r for r in rows if r["system"] == system]
        summary = _block(mine)
        summary["latency_ms_p50"] = round(percentile([r["latency_ms"] for r in mine], 50), 2)
        summary["per_ability"] = {a: _block([r for r in mine if r["ability"] == a]) for a in ABILITIES if any(r["ability"] == a for r in mine)}
        systems[system] = summary
    return {
        "benchmark": "beam",
        "mode": "judged" if config.judge else "retrieval-only",
        "data": Path(config.data).name,
        "chats": [c.chat_id for c in chats],
        "questions": sum(len(c.questions) for c in chats),
        "history_tokens": history_tokens,
        "config": {
            "embedder": recorded_name(settings.embedder.model, settings.embedder.runtime),
            "top_k": config.top_k,
            "ks": list(KS),
            "judge": config.judge,
            "backend": config.backend,
            "asked_at": "the day after each chat's last batch",
            "prompt_version": prompts.PROMPT_VERSION,
        },
        "systems": systems,
    }


def write_results(results: dict[str, Any], rows: list[dict[str, Any]], out_dir: Path) -> None:
    """DIR/results.json, DIR/report.md, DIR/per_question.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    with (out_dir / "per_question.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    (out_dir / "report.md").write_text(render_report(results), encoding="utf-8")


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render_report(results: dict[str, Any]) -> str:
    systems = results["systems"]
    tokens = results["history_tokens"]
    judged = results["mode"] == "judged"
    lines = [
        "# BEAM: evidence recall per ability" + (" and rubric judge" if judged else ""),
        "",
        f"Data: `{results['data']}`: {len(results['chats'])} chats ({', '.join(results['chats'])}), {results['questions']} probing "
        f"questions, each chat in its own user namespace, asked the day after its last batch. Embedder `{results['config']['embedder']}`, "
        f"top {results['config']['top_k']}. History per chat: {', '.join(f'{c} {n:,}' for c, n in tokens.items())} tokens "
        f"(answer model's tokenizer, as evidence lines).",
        "",
    ]
    if judged:
        lines.append(f"Answers by `{results['config']['backend']}`, judged by `{results['config']['judge']}` item by item on each rubric.")
    else:
        lines.append(
            "**No judge was given: no answer was generated or scored.** This run reports retrieval (recall against "
            "`source_chat_ids`) and model-free measures only: the tokens each system's evidence costs, and `rubric_recall@10`, "
            "the share of each rubric item's content words present in the top-10 evidence (an upper bound on what an answer "
            "drawn from that evidence could state, not a score of any answer). Abstention questions have no evidence ids and "
            "count only in the token and rubric columns."
        )
    lines += ["", "## Overall", ""]
    header = ["system", "n (with ids)"] + [f"any@{k}" for k in KS] + [f"all@{k}" for k in KS] + ["rubric_recall@10", "evidence tokens", "p50 ms"]
    if judged:
        header.append("judge")
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, s in systems.items():
        cells = [name, f"{s['n']} ({s['n_with_evidence']})"] + [_f(s[f"recall_any@{k}"]) for k in KS] + [_f(s[f"recall_all@{k}"]) for k in KS]
        cells += [_f(s["rubric_recall@10"]), _f(s["evidence_tokens"]), _f(s["latency_ms_p50"])]
        if judged:
            cells.append(_f(s.get("judge")))
        lines.append("| " + " | ".join(cells) + " |")
    for metric in ("recall_any@5", "recall_any@10", "recall_all@10", "rubric_recall@10", "evidence_tokens") + (("judge",) if judged else ()):
        abilities = [a for a in ABILITIES if any(a in s["per_ability"] for s in systems.values())]
        lines += ["", f"## Per ability: {metric}", "", "| ability | n | " + " | ".join(systems) + " |", "|---|---" + "|---" * len(systems) + "|"]
        for ability in abilities:
            first = next(iter(systems.values()))["per_ability"].get(ability, {})
            n = first.get("n_with_evidence") if metric.startswith("recall") else first.get("n")
            cells = [_f(s["per_ability"].get(ability, {}).get(metric)) for s in systems.values()]
            lines.append(f"| {ability} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
