"""The runner end to end on real (small) data with the real store and retriever and a scripted,
deterministic backend: report files, resume after a crash, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memstream.backends.scripted import ScriptedBackend
from memstream.benchmarks.runner import RunConfig, RunDirectoryError, bench_settings, build_parts, read_predictions, run_benchmark
from tests.benchmarks.conftest import answer_from_memory, tiny_locomo_samples

ALL_SYSTEMS = ["memstream", "no-memory", "full-context", "bm25", "dense", "hybrid"]
REPORT_FILES = ("predictions.jsonl", "results.json", "report.md", "per_category.png", "accuracy_vs_tokens.png")


def run(out: Path, data: Path, benchmark: str, embedders, backend, judge=None, systems=ALL_SYSTEMS, resume=False, **config):
    parts = build_parts(bench_settings(out), backend=backend, judge_backend=judge, embedders=embedders)
    cfg = RunConfig(benchmark=benchmark, data=str(data), systems=list(systems), backend="scripted", judge="scripted" if judge else None, **config)
    return run_benchmark(cfg, out, parts=parts, resume=resume, progress=False)


def without_latency(results: dict) -> dict:
    """Latency is wall time: the one thing two identical runs never share."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("latency")}
        return node

    return strip(results)


@pytest.mark.slow
def test_locomo_tiny_run_writes_every_report(tmp_path, tiny_locomo, embedders, answerer, judge_backend):
    results = run(tmp_path / "run", tiny_locomo, "locomo", embedders, answerer, judge_backend, limit=3)
    for name in REPORT_FILES:
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    records = read_predictions(tmp_path / "run" / "predictions.jsonl")
    assert len(records) == 3 * len(ALL_SYSTEMS)
    assert set(results["systems"]) == set(ALL_SYSTEMS)
    memstream = results["systems"]["memstream"]
    assert 0.0 <= memstream["f1"] <= 1.0 and memstream["evidence_recall@10"] is not None
    assert results["systems"]["no-memory"]["prompt_tokens"] < results["systems"]["full-context"]["prompt_tokens"]
    # full context sees the whole two-session history here, so all the evidence is in its prompt
    assert results["systems"]["full-context"]["evidence_in_context"] == 1.0
    assert all(r["judge"] is not None for r in records)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| memstream |" in report and "f1 per category" in report
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["benchmark"] == "locomo" and saved["config"]["limit"] == 3


@pytest.mark.slow
def test_longmemeval_sample_run(tmp_path, longmemeval_sample, embedders, answerer, judge_backend):
    results = run(tmp_path / "run", longmemeval_sample, "longmemeval", embedders, answerer, judge_backend, systems=["memstream", "hybrid"])
    for name in REPORT_FILES:
        assert (tmp_path / "run" / name).exists(), name
    hybrid = results["systems"]["hybrid"]
    assert hybrid["questions"] == 2
    assert set(hybrid["per_category"]) == {"knowledge-update", "temporal-reasoning"}
    # one answerable question: its session recall is measured; the abstention question is judged on abstaining
    assert hybrid["session_recall_any@10"] is not None and hybrid["turn_ndcg@10"] is not None
    assert hybrid["abstention_accuracy"] in (0.0, 1.0)


class Crash(RuntimeError):
    """Not a BackendError: nothing in the runner catches it, like a kill."""


def crashing_backend(after: int) -> ScriptedBackend:
    backend = ScriptedBackend(respond=answer_from_memory)
    calls = {"n": 0}
    real = backend.stream

    def stream(messages, **opts):
        calls["n"] += 1
        if calls["n"] > after:
            raise Crash("killed mid-run")
        return real(messages, **opts)

    backend.stream = stream  # type: ignore[method-assign]
    return backend


@pytest.mark.slow
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, tiny_locomo, embedders):
    systems = ["memstream", "full-context", "hybrid"]
    whole = run(tmp_path / "whole", tiny_locomo, "locomo", embedders, ScriptedBackend(respond=answer_from_memory), systems=systems)

    with pytest.raises(Crash):
        run(tmp_path / "cut", tiny_locomo, "locomo", embedders, crashing_backend(after=7), systems=systems)
    # Killed at the 8th model call: some answers (abstentions, date answers) need no call, so at least 7 are saved.
    cut = len(read_predictions(tmp_path / "cut" / "predictions.jsonl"))
    assert 7 <= cut < 6 * len(systems)
    with pytest.raises(RunDirectoryError, match="--resume"):
        run(tmp_path / "cut", tiny_locomo, "locomo", embedders, ScriptedBackend(respond=answer_from_memory), systems=systems)
    resumed = run(tmp_path / "cut", tiny_locomo, "locomo", embedders, ScriptedBackend(respond=answer_from_memory), systems=systems, resume=True)

    assert len(read_predictions(tmp_path / "cut" / "predictions.jsonl")) == 6 * len(systems)  # nothing asked twice
    assert without_latency(resumed) == without_latency(whole)


def test_torn_last_line_is_redone_on_resume(tmp_path, tiny_locomo, embedders):
    out = tmp_path / "run"
    run(out, tiny_locomo, "locomo", embedders, ScriptedBackend(respond=answer_from_memory), systems=["no-memory"], limit=2)
    path = out / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second record
    results = run(out, tiny_locomo, "locomo", embedders, ScriptedBackend(respond=answer_from_memory), systems=["no-memory"], limit=2, resume=True)
    assert results["systems"]["no-memory"]["questions"] == 2
    assert len(read_predictions(path)) == 2


def test_bad_input_is_reported_and_the_run_continues(tmp_path, embedders):
    good = tiny_locomo_samples()[0]
    no_answer = dict(good, sample_id="conv-x", qa=[{"question": "Where?", "category": 4, "evidence": []}] + good["qa"][:1])
    empty = {"sample_id": "conv-empty", "conversation": {"speaker_a": "A", "speaker_b": "B"}, "qa": good["qa"][:2]}
    broken = {"sample_id": "conv-broken", "qa": []}
    data = tmp_path / "bad_locomo.json"
    data.write_text(json.dumps([broken, empty, no_answer, good]))
    # the judge backend is down for every call; the answering backend fails on one question
    failing_judge = ScriptedBackend(fail_after=0)
    flaky = ScriptedBackend(respond=answer_from_memory, fail_after=None)
    real = flaky.stream
    calls = {"n": 0}

    def stream(messages, **opts):
        calls["n"] += 1
        if calls["n"] == 2:
            flaky.fail_after = 0
        try:
            yield from real(messages, **opts)
        finally:
            flaky.fail_after = None

    flaky.stream = stream  # type: ignore[method-assign]
    results = run(tmp_path / "run", data, "locomo", embedders, flaky, failing_judge, systems=["no-memory"], limit=4)

    problems = results["problems"]
    assert results["failures"]["load_problems"] == 3
    assert any("conv-broken" in p and "missing field 'conversation'" in p for p in problems)
    assert any("conv-empty" in p and "empty" in p for p in problems)
    assert any("conv-x:q0" in p and "missing field 'answer'" in p for p in problems)
    summary = results["systems"]["no-memory"]
    assert summary["questions"] == 4  # the rest still ran
    assert summary["errors"] == 1 and results["failures"]["answer_errors"]["no-memory"] == 1
    assert summary["judge_failures"] == 3  # every answered question; the failed one never reached the judge
    records = read_predictions(tmp_path / "run" / "predictions.jsonl")
    assert any("backend failed" in (r["error"] or "") for r in records)
    assert all("judge backend failed" in r["judge_error"] for r in records if not r["error"])
    assert "data items skipped: 3" in (tmp_path / "run" / "report.md").read_text()


def test_unknown_longmemeval_type_is_skipped_with_a_message(tmp_path, longmemeval_sample, embedders, answerer):
    items = json.loads(longmemeval_sample.read_text())
    items[0] = dict(items[0], question_type="cooking")
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(items))
    results = run(tmp_path / "run", data, "longmemeval", embedders, answerer, systems=["no-memory"])
    assert results["failures"]["load_problems"] == 1
    assert "unknown question type 'cooking'" in results["problems"][0]
    assert results["systems"]["no-memory"]["questions"] == 1


def test_locomo_evidence_holding_two_ids_is_split_the_same_for_both_loaders():
    from memstream.benchmarks.datasets import load_locomo_questions
    from memstream.benchmarks.questions import load_benchmark
    from tests.conftest import LOCOMO_DEV

    runner_questions = load_benchmark("locomo", LOCOMO_DEV).questions
    joined = [q for q in runner_questions if "D8:6" in q.evidence and "D9:17" in q.evidence]
    assert joined, "the dev set has one evidence entry 'D8:6; D9:17'"
    assert all(";" not in e for q in runner_questions for e in q.evidence)
    retrieval_questions = {(q.sample_id, q.question): q.evidence for q in load_locomo_questions(LOCOMO_DEV)}
    for q in joined:
        sample_id = q.namespace.split(":", 1)[1]
        assert any(ev == q.evidence for (sid, _), ev in retrieval_questions.items() if sid == sample_id)
