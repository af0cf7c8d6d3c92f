"""LLM-as-judge: does a prediction give the gold answer? Any ChatBackend can judge.

A judge that fails (backend error) or replies with neither yes nor no raises JudgeError; the
runner records the failure on that prediction, counts it in the report, and goes on.
"""

from __future__ import annotations

import re

from memstream.agent import prompts
from memstream.backends.base import BackendError, ChatBackend

_VERDICT = re.compile(r"\b(yes|no|correct|incorrect|wrong)\b", re.IGNORECASE)


class JudgeError(RuntimeError):
    """The judge backend failed or gave no verdict."""


def judge_messages(question: str, gold: str, prediction: str, abstention: bool = False) -> list[dict]:
    template = prompts.JUDGE_ABSTENTION if abstention else prompts.JUDGE
    return [{"role": "user", "content": template.format(question=question, gold=gold, prediction=prediction)}]


def parse_verdict(reply: str) -> bool:
    match = _VERDICT.search(reply)
    if match is None:
        raise JudgeError(f"judge gave no yes/no verdict: {reply[:80]!r}")
    return match.group(1).lower() in ("yes", "correct")


def judge(backend: ChatBackend, question: str, gold: str, prediction: str, abstention: bool = False) -> bool:
    """True when the judge says the prediction is right. Raises JudgeError."""
    try:
        reply = backend.complete(judge_messages(question, gold, prediction, abstention), max_tokens=8, temperature=0.0)
    except BackendError as exc:
        raise JudgeError(f"judge backend failed: {exc}") from exc
    return parse_verdict(reply)
