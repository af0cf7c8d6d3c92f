"""Small real data for runner tests: the first LoCoMo conversation cut to two sessions, and the
LongMemEval sample; a deterministic scripted answerer and judge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memstream.backends.scripted import ScriptedBackend
from tests.conftest import LOCOMO_DEV, LONGMEMEVAL_SAMPLE


def tiny_locomo_samples() -> list[dict]:
    sample = json.loads(LOCOMO_DEV.read_text(encoding="utf-8"))[0]
    conversation = {k: v for k, v in sample["conversation"].items() if not k.startswith("session_") or k.split("_")[1] in ("1", "2")}
    questions = [q for q in sample["qa"] if all(e.split(":")[0] in ("D1", "D2") for e in q.get("evidence", []))]
    chosen = questions[:5] + [q for q in sample["qa"] if q["category"] == 5][:1]
    return [{"sample_id": sample["sample_id"], "conversation": conversation, "qa": chosen}]


@pytest.fixture
def tiny_locomo(tmp_path) -> Path:
    path = tmp_path / "tiny_locomo.json"
    path.write_text(json.dumps(tiny_locomo_samples()), encoding="utf-8")
    return path


@pytest.fixture
def longmemeval_sample() -> Path:
    return LONGMEMEVAL_SAMPLE


def answer_from_memory(messages) -> str:
    """Deterministic stand-in for a model: quote the first memory record, or abstain when there is none."""
    system = messages[0]["content"]
    records = re.findall(r"^\[[^\]]+\] [^:]+: (.*)$", system, flags=re.MULTILINE)
    return records[0][:60] if records else "Not mentioned in the conversation"


def judge_by_overlap(messages) -> str:
    prompt = messages[-1]["content"]
    gold = re.search(r"Correct answer: (.*)", prompt)
    response = re.search(r"Response: (.*)", prompt)
    if gold is None:  # the abstention prompt
        return "yes" if "not mentioned" in prompt.lower() else "no"
    shared = set(gold.group(1).lower().split()) & set(response.group(1).lower().split())
    return "yes" if shared else "no"


@pytest.fixture
def answerer() -> ScriptedBackend:
    return ScriptedBackend(respond=answer_from_memory)


@pytest.fixture
def judge_backend() -> ScriptedBackend:
    return ScriptedBackend(respond=judge_by_overlap)
