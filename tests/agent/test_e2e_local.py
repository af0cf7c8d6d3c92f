"""End to end with the default local model and no network: ingest a LoCoMo conversation,
then `memstream ask` a single-hop question whose evidence is far outside the flash window."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memstream.cli import app
from tests.conftest import LOCOMO_DEV


@pytest.mark.slow
def test_ask_retrieves_evidence_from_the_archive(tmp_path):
    sample = json.loads(LOCOMO_DEV.read_text())[0]  # conv-26
    # Six sessions (~120 turns) keep the test quick; the evidence is in session 2, the flash window holds session 6.
    conversation = sample["conversation"]
    for key in [k for k in conversation if k.startswith("session_") and int(k.split("_")[1]) > 6]:
        del conversation[key]
    path = tmp_path / "conv26.json"
    path.write_text(json.dumps([sample]))
    db = f"sqlite:///{tmp_path / 'e2e.db'}"
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", str(path), "--user", "e2e", "--db", db])
    assert ingested.exit_code == 0, ingested.output

    result = runner.invoke(
        app,
        ["ask", "What did the charity race raise awareness for?", "--user", "e2e", "--conversation", "conv-26",
         "--at", "2023-11-01", "--no-remember", "--json", "--db", db],
    )
    assert result.exit_code == 0, result.output
    reply = json.loads(result.output[result.output.index("{"):])
    assert reply["text"].strip()
    sources = [m["source_id"] for m in reply["memories"]]
    assert "D2:2" in sources  # "...the charity race ... raise awareness for mental health"
    assert reply["plan"]["needs_memory"] is True
    # The evidence is from session 2 of 6: far outside the flash window of the latest turns.
    assert reply["prompt_tokens"] < 4000
