"""Chain of agents: when evidence exceeds one prompt, workers read it chunk by chunk in time
order, each passing a short note forward; a manager answers from the last note."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from memstream.agent import prompts
from memstream.backends.base import ChatBackend

NOTE_TOKENS = 160


@dataclass
class ChainResult:
    notes: list[str] = field(default_factory=list)
    """The note after each worker, in order."""
    worker_prompts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def run_workers(backend: ChatBackend, question: str, chunks: Sequence[Sequence[str]], result: ChainResult | None = None) -> ChainResult:
    result = result or ChainResult()
    note = "(none yet)"
    for part, chunk in enumerate(chunks, 1):
        prompt = prompts.WORKER.format(part=part, parts=len(chunks), question=question, note=note, records="\n".join(chunk))
        result.worker_prompts.append(prompt)
        messages = [{"role": "user", "content": prompt}]
        result.prompt_tokens += backend.count_tokens(messages)
        reply = backend.complete(messages, max_tokens=NOTE_TOKENS, temperature=0.0).strip()
        result.completion_tokens += backend.count_tokens(reply)
        # A worker that finds nothing keeps the previous note instead of erasing it.
        if reply and "nothing relevant" not in reply.lower()[:40]:
            note = reply
        result.notes.append(note)
    return result


def manager_messages(question: str, note: str) -> list:
    return [{"role": "user", "content": prompts.MANAGER.format(note=note, question=question)}]


def chain_of_agents(
    backend: ChatBackend, question: str, chunks: Sequence[Sequence[str]], **generation
) -> tuple[str, ChainResult]:
    """Run the whole chain and return (answer, trace). The controller streams the manager instead."""
    result = run_workers(backend, question, chunks)
    note = result.notes[-1] if result.notes else "(no notes)"
    answer = backend.complete(manager_messages(question, note), **generation)
    return answer, result
