"""The systems a benchmark compares, all answering through the same agent, store and backend.

- memstream: the full pipeline (planner, time-aware hybrid retrieval with facts, chain of agents).
- no-memory: the question alone.
- full-context: the whole history as evidence lines, cut from the oldest side to fit the window.
- bm25 / dense / hybrid: retrieval with the question as query, one prompt; no planning, facts or time.

Every system gets the same short-answer instruction, answer-token cap and post-processing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from memstream.agent import prompts
from memstream.agent.compose import build_messages, day, evidence_lines, memory_block
from memstream.agent.controller import MemoryAgent, TurnOptions
from memstream.benchmarks.answers import clean_prediction
from memstream.benchmarks.questions import BenchQuestion

SYSTEMS = ("memstream", "no-memory", "full-context", "bm25", "dense", "hybrid")
FULL_CONTEXT_RESERVE = 64  # tokens of slack: chat-template overhead the per-line counts do not see
FULL_CONTEXT_QUESTION = 64
"""Tokens the history cut leaves for the question (more when the question is longer). The cut is then
the same for every question of a conversation, so each full-context prompt is one fixed prefix (system
prompt and history) plus its question, and a local backend's prompt cache prefills only the question."""


class UnknownSystemError(ValueError):
    """A --system name that is not one of SYSTEMS."""


def check_systems(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise UnknownSystemError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if not names:
        raise UnknownSystemError("no system chosen; pass --system (one of " + ", ".join(SYSTEMS) + ")")
    return list(dict.fromkeys(names))


def turn_options(system: str, top_k: int, max_tokens: int) -> TurnOptions:
    if system == "memstream":
        return TurnOptions(retrieval_mode="memstream", plan=True, remember=False, short_answer=True, top_k=top_k, max_tokens=max_tokens)
    if system == "no-memory":
        return TurnOptions(retrieval_mode="none", plan=False, remember=False, short_answer=True, max_tokens=max_tokens)
    return TurnOptions(retrieval_mode=system, plan=False, remember=False, short_answer=True, top_k=top_k, max_tokens=max_tokens)


@dataclass
class Answer:
    raw: str
    prediction: str
    retrieved: list[str] = field(default_factory=list)
    """Source ids of retrieved evidence, best first (retrieval systems)."""
    context: list[str] = field(default_factory=list)
    """Source ids of the history that fit the prompt (full-context)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class HistoryLines:
    """A namespace's whole history as evidence lines with token counts (computed once, reused per question)."""

    lines: list[str]
    tokens: list[int]
    source_ids: list[str]


def history_lines(agent: MemoryAgent, namespace: str) -> HistoryLines:
    turns = agent.store.list_turns(namespace)
    turns.sort(key=lambda t: (t.event_time, t.session_id or 0, t.position, t.id))
    lines = evidence_lines(turns)
    count = agent.backend.count_tokens
    return HistoryLines(lines, [count(line) + 1 for line in lines], [t.source_id or str(t.id) for t in turns])


def full_context_answer(agent: MemoryAgent, question: BenchQuestion, history: HistoryLines, max_tokens: int) -> Answer:
    backend = agent.backend
    count = backend.count_tokens
    system = prompts.SYSTEM.format(today=day(question.asked_at))
    fixed = count(build_messages(system, [], memory_block([]), "", short_answer=True))
    asked = max(count(question.question), FULL_CONTEXT_QUESTION)
    budget = backend.context_window - max_tokens - fixed - asked - FULL_CONTEXT_RESERVE
    start = len(history.lines)
    used = 0
    # Keep the newest lines that fit: truncation drops the oldest history first.
    while start > 0 and used + history.tokens[start - 1] <= budget:
        start -= 1
        used += history.tokens[start]
    messages = build_messages(system, [], memory_block(history.lines[start:]), question.question, short_answer=True)
    began = time.perf_counter()
    raw = backend.complete(messages, max_tokens=max_tokens, temperature=0.0)
    latency = time.perf_counter() - began
    return Answer(
        raw=raw,
        prediction=clean_prediction(raw, question.choices),
        context=history.source_ids[start:],
        prompt_tokens=count(messages),
        completion_tokens=count(raw) if raw else 0,
        latency_s=latency,
    )


def agent_answer(agent: MemoryAgent, system: str, question: BenchQuestion, top_k: int, max_tokens: int) -> Answer:
    began = time.perf_counter()
    reply = agent.chat(question.question, user=question.namespace, conversation="bench", at=question.asked_at, options=turn_options(system, top_k, max_tokens))
    latency = time.perf_counter() - began
    retrieved = []
    for hit in reply.memories:
        source = hit.turn.metadata.get("source_id") if hit.turn.metadata else None
        retrieved.append(str(source or hit.turn.id))
    return Answer(
        raw=reply.text,
        prediction=clean_prediction(reply.text, question.choices),
        retrieved=retrieved,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        latency_s=latency,
    )


def answer(agent: MemoryAgent, system: str, question: BenchQuestion, history: Callable[[str], HistoryLines], top_k: int, max_tokens: int) -> Answer:
    """Answer one question with one system. Backend failures propagate (AgentError / BackendError)."""
    if system == "full-context":
        return full_context_answer(agent, question, history(question.namespace), max_tokens)
    return agent_answer(agent, system, question, top_k, max_tokens)
