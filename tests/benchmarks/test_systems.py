"""The full-context system's prompt: one fixed prefix per conversation, then the question."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace

from memstream.backends.scripted import ScriptedBackend
from memstream.benchmarks.questions import BenchQuestion
from memstream.benchmarks.runner import RunConfig, bench_settings, build_parts, read_predictions, run_benchmark
from memstream.benchmarks.systems import HistoryLines, full_context_answer
from tests.benchmarks.conftest import answer_from_memory


def test_full_context_cuts_the_history_the_same_way_for_every_question():
    backend = ScriptedBackend(context_window=600)
    lines = [f"[{i % 28 + 1} May 2023] Caroline: this is line {i} of a long conversation" for i in range(100)]
    history = HistoryLines(lines, [backend.count_tokens(line) + 1 for line in lines], [f"D{i}" for i in range(100)])
    short = BenchQuestion("q1", "locomo:c1", "Where?", "Paris", "single-hop", datetime(2023, 6, 1))
    long = replace(short, qid="q2", question=" ".join(["word"] * 50))
    agent = SimpleNamespace(backend=backend)
    first, second = (full_context_answer(agent, question, history, max_tokens=16) for question in (short, long))
    # The history is cut from the oldest side, at the same line for both questions ...
    assert first.context == second.context and 0 < len(first.context) < 100
    assert first.context[-1] == "D99"
    # ... so both prompts are one shared prefix (system prompt with the history) plus the question,
    # and the longer one still fits the window.
    (system_1, question_1), (system_2, question_2) = backend.calls
    assert system_1 == system_2 and question_1 != question_2
    assert second.prompt_tokens + 16 <= backend.context_window


def test_the_runner_asks_a_conversations_questions_system_by_system(tmp_path, tiny_locomo, embedders):
    """Consecutive full-context prompts then share their whole history (a local backend's prompt cache)."""
    out = tmp_path / "run"
    parts = build_parts(bench_settings(out), backend=ScriptedBackend(respond=answer_from_memory), embedders=embedders)
    config = RunConfig(benchmark="locomo", data=str(tiny_locomo), systems=["no-memory", "full-context"], backend="scripted", limit=3)
    run_benchmark(config, out, parts=parts, progress=False)
    records = read_predictions(out / "predictions.jsonl")
    assert [r["system"] for r in records] == ["no-memory"] * 3 + ["full-context"] * 3
    assert [r["qid"] for r in records[:3]] == [r["qid"] for r in records[3:]]
