"""`memstream memory search`, `memory reembed` and `bench locomo --retrieval-only` through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memstream.cli import app
from tests.conftest import LOCOMO_DEV

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def tiny_locomo(tmp_path):
    """conv-26 cut to its first two sessions, with the questions whose evidence lies in them."""
    sample = json.loads(LOCOMO_DEV.read_text())[0]
    conversation = {k: v for k, v in sample["conversation"].items() if not k.startswith("session_") or k.split("_")[1] in ("1", "2")}
    qa = [q for q in sample["qa"] if q.get("evidence") and all(e.split(":")[0] in ("D1", "D2") for e in q["evidence"])]
    path = tmp_path / "tiny_locomo.json"
    path.write_text(json.dumps([{"sample_id": sample["sample_id"], "conversation": conversation, "qa": qa}]))
    return path


def test_search_json_and_bad_input(tiny_locomo, sqlite_url):
    assert run("ingest", str(tiny_locomo), "--user", "u", "--db", sqlite_url).exit_code == 0
    result = run("memory", "search", "LGBTQ support group", "--user", "u", "-k", "3", "--at", "2023-06-01", "--json", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["hits"]) == 3 and "LGBTQ" in data["hits"][0]["text"]
    assert data["hits"][0]["source_id"].startswith("D") and data["hits"][0]["conversation_id"] == "conv-26"

    bad = [
        (["memory", "search", "x", "--user", "u", "--at", "the twelfth of never"], "cannot parse date"),
        (["memory", "search", "x", "--user", "nobody"], "unknown user"),
        (["memory", "search", "  ", "--user", "u"], "empty"),
        (["memory", "search", "x", "--user", "u", "-k", "0"], "positive"),
        (["memory", "search", "x", "--user", "u", "-k", "100000"], "too large"),
    ]
    for args, message in bad:
        result = run(*args, "--db", sqlite_url)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_bench_locomo_retrieval_only(tiny_locomo, tmp_path):
    out = tmp_path / "run"
    result = run("bench", "locomo", "--data", str(tiny_locomo), "--retrieval-only", "--limit", "6", "--out", str(out))
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["systems"]) == {"memstream", "hybrid", "bm25", "dense"}
    for summary in results["systems"].values():
        assert summary["n"] == 6
        for k in (1, 5, 10, 20):
            assert 0.0 <= summary[f"recall_all@{k}"] <= summary[f"recall_any@{k}"] <= 1.0
        assert summary["recall_any@1"] <= summary["recall_any@20"]
        assert summary["latency_ms_p50"] <= summary["latency_ms_p95"]
    assert "memstream without session_decomposition" in results["ablation"]
    report = (out / "report.md").read_text()
    assert "| memstream |" in report and "Ablation" in report
    assert run("bench", "locomo", "--data", str(tmp_path / "missing.json"), "--retrieval-only").exit_code == 2
