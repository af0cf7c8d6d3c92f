"""`memstream bench longmemeval` and `bench report` from the command line (scripted backend)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memstream.cli import app
from tests.conftest import LONGMEMEVAL_SAMPLE


@pytest.mark.slow
def test_longmemeval_cli_then_report_rebuilds_the_same_results(tmp_path):
    out = tmp_path / "lme"
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "longmemeval", "--data", str(LONGMEMEVAL_SAMPLE), "--backend", "scripted", "--judge-backend", "none",
                                 "--system", "no-memory", "--system", "bm25", "--limit", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no-memory" in result.output and "bm25" in result.output
    first = json.loads((out / "results.json").read_text())
    assert first["systems"]["bm25"]["questions"] == 2  # the sample has two questions
    (out / "results.json").unlink()
    (out / "report.md").unlink()
    rebuilt = runner.invoke(app, ["bench", "report", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads((out / "results.json").read_text()) == first
    assert (out / "report.md").exists()


def test_bad_options_give_one_line_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["bench", "longmemeval", "--data", str(tmp_path / "nope.json"), "--backend", "scripted"])
    assert missing.exit_code == 2 and "no such file" in missing.output
    unknown = runner.invoke(app, ["bench", "longmemeval", "--data", str(LONGMEMEVAL_SAMPLE), "--backend", "scripted", "--system", "magic", "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "unknown system(s) magic" in unknown.output
    report = runner.invoke(app, ["bench", "report", str(tmp_path)])
    assert report.exit_code == 2 and "no config.json" in report.output


def test_locomo_cli_takes_a_judge_backend_and_model(tmp_path):
    from tests.benchmarks.conftest import tiny_locomo_samples

    data = tmp_path / "tiny.json"
    data.write_text(json.dumps(tiny_locomo_samples()), encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["bench", "locomo", "--data", str(data), "--backend", "scripted", "--judge-backend", "scripted",
                                      "--judge-model", "strict-judge", "--system", "no-memory", "--limit", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["judge"] == "scripted:strict-judge"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all("judge" in r for r in records)
