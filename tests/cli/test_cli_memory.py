from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memstream.cli import app
from memstream.config import load_settings
from memstream.memory import open_memory
from tests.conftest import LOCOMO_DEV, LONGMEMEVAL_SAMPLE

runner = CliRunner()


def rows_of(url: str):
    """The database the CLI wrote, opened for reading its rows (no model, no index)."""
    return open_memory(load_settings(db_url=url), index=False)


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help():
    for command in (["ingest"], ["memory", "list"], ["memory", "export"], ["memory", "import"], ["memory", "forget"], ["memory", "stats"], ["memory", "search"]):
        result = run(*command, "--help")
        assert result.exit_code == 0, command
        assert "Example" in result.output or "Usage" in result.output


def test_ingest_list_export_import_forget(sqlite_url, tmp_path):
    result = run("ingest", str(LOCOMO_DEV), "--user", "a", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "2760 turns" in result.output and "5 conversations" in result.output
    assert run("ingest", str(LONGMEMEVAL_SAMPLE), "--user", "b", "--db", sqlite_url).exit_code == 0

    listed = json.loads(run("memory", "list", "--user", "a", "--conversation", "conv-30", "--json", "--db", sqlite_url).output)
    assert listed and all(t["conversation_id"] == "conv-30" and t["user_id"] == "a" for t in listed)

    exported = run("memory", "export", "--user", "a", "--db", sqlite_url).output
    path = tmp_path / "a.jsonl"
    path.write_text(exported)
    assert run("memory", "import", str(path), "--user", "a2", "--db", sqlite_url).exit_code == 0
    stats = json.loads(run("memory", "stats", "--json", "--db", sqlite_url).output)
    assert stats["users"] == 3 and stats["turns"] == 2760 * 2 + 48

    result = run("memory", "forget", "--user", "a", "--yes", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    with rows_of(sqlite_url) as memory:
        assert memory.count_turns("a") == 0 and memory.count_turns("b") == 48 and memory.count_turns("a2") == 2760
    # Nothing of a is visible as b through the CLI.
    b_listing = run("memory", "list", "--user", "b", "--limit", "1000", "--json", "--db", sqlite_url).output
    assert "Caroline" not in b_listing


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["ingest", "{tmp}/missing.json", "--user", "u"], "no such file"),
        ("{", ["ingest", "{tmp}/bad.json", "--user", "u"], "invalid JSON"),
        ("locomo-no-date", ["ingest", "{tmp}/bad.json", "--user", "u"], "session_1_date_time"),
        ("[]", ["ingest", "{tmp}/bad.json", "--user", "u", "--format", "csv"], "unknown format"),
        ("[]", ["ingest", "{tmp}/bad.json", "--user", ""], "user id"),
        ("[]", ["ingest", "{tmp}/bad.json", "--user", "u"], "cannot detect"),
        (None, ["memory", "list", "--user", "nobody"], "unknown user"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(sqlite_url, tmp_path, setup, args, message):
    bad = tmp_path / "bad.json"
    if setup == "locomo-no-date":
        bad.write_text(json.dumps([{"sample_id": "s", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]}}]))
    elif setup is not None:
        bad.write_text(setup)
    args = [a.format(tmp=tmp_path) for a in args] + ["--db", sqlite_url]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    with rows_of(sqlite_url) as memory:
        assert memory.count_turns() == 0


def test_unopenable_database_url(tmp_path):
    for url in (f"sqlite:///{tmp_path}/no/such/dir/x.db", "not a url", "mysql+nodriver://x/y"):
        result = runner.invoke(app, ["ingest", str(LONGMEMEVAL_SAMPLE), "--user", "u", "--db", url])
        assert result.exit_code == 2, (url, result.output)
        assert result.output.startswith("Error:")
