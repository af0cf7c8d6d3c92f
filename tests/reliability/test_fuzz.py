"""Property-based fuzzing of every parser and entry point (bounded; benchmarks/reliability.py runs
the same targets with more examples and records the case counts).

Allowed outcomes per target: a result, or the entry point's documented clear error:
importers -> ImportFormatError; time parsing -> never raises; config -> ConfigError;
CLI -> exit 0 or exit 2 with a one-line "Error:"; MemoryAgent.chat -> ValueError.
"""

from __future__ import annotations

import json

import pytest

from memstream.config import load_settings
from memstream.memory import open_memory
from tests.reliability import fuzz_targets as ft

EXAMPLES = 150


@pytest.mark.parametrize("fmt", ["locomo", "longmemeval", "jsonl"])
def test_importers_raise_only_import_format_errors(fmt):
    with open_memory(load_settings(db_url="sqlite://"), index=False) as memory:
        check, strategy, allowed = ft.importer_target(fmt, memory)
        counts = ft.run_target(check, strategy, allowed, EXAMPLES)
    assert counts.cases >= EXAMPLES // 2
    # Both outcomes were exercised: the mutated real samples still parse sometimes.
    assert 0 < counts.clear_errors < counts.cases


def test_time_window_extraction_never_raises():
    check, strategy, allowed = ft.time_window_target()
    assert ft.run_target(check, strategy, allowed, 200).cases >= 100


def test_parse_datetime_never_raises():
    check, strategy, allowed = ft.parse_datetime_target()
    assert ft.run_target(check, strategy, allowed, 80).cases >= 40


def test_config_loading_raises_only_config_errors(tmp_path):
    check, strategy, allowed = ft.config_target(tmp_path)
    counts = ft.run_target(check, strategy, allowed, EXAMPLES)
    assert 0 < counts.clear_errors < counts.cases


def test_cli_arguments_exit_cleanly(tmp_path, cli_shares_embedders):
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    sample = tmp_path / "log.jsonl"
    sample.write_text("\n".join(json.dumps({"role": r, "content": f"I walked my dog Rex in May, line {i}", "time": "2023-05-0%d" % (i + 1)}) for i, r in enumerate(["user", "assistant"] * 2)) + "\n")
    from typer.testing import CliRunner

    from memstream.cli import app

    assert CliRunner().invoke(app, ["ingest", str(sample), "--user", "alice", "--db", db_url]).exit_code == 0
    check, strategy, allowed = ft.cli_target(db_url, str(sample))
    assert ft.run_target(check, strategy, allowed, 120).cases >= 60


def test_agent_chat_accepts_or_rejects_hostile_text(make_agent):
    from memstream.backends.scripted import ScriptedBackend

    agent = make_agent(ScriptedBackend())
    check, strategy, allowed = ft.chat_target(agent)
    counts = ft.run_target(check, strategy, allowed, 40)
    assert 0 < counts.clear_errors < counts.cases


def test_agent_chat_huge_and_over_limit_messages(make_agent):
    from memstream.backends.scripted import ScriptedBackend

    agent = make_agent(ScriptedBackend(), **{"agent.max_message_chars": 200_000})
    huge = "\x00".join(["notes about my garden"] * 9_000)  # ~200 kB with NUL separators
    reply = agent.chat(huge, user="alice")
    assert agent.memory.get_turn("alice", reply.user_turn_id).text == huge.replace("\x00", "")
    with pytest.raises(ValueError, match="max_message_chars"):
        agent.chat("x" * 200_001, user="alice")
    assert agent.memory.count_turns("alice") == 2
