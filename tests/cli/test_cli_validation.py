"""The CLI's ways in share the one validation: a year-1 time or list metadata exits 2 naming the problem, and
nothing is stored (even when the bad row comes after good ones)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from memstream.cli import app
from memstream.config import load_settings
from memstream.memory import open_memory


def count_turns(db: str) -> int:
    with open_memory(load_settings(db_url=db), index=False) as memory:
        return memory.count_turns()


def test_ingest_with_a_year_one_time_exits_2_and_stores_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'm.db'}"
    lines = [{"role": "user", "content": f"fine turn {i}", "time": "2023-05-01T10:00:00"} for i in range(3000)]
    lines.append({"role": "user", "content": "hello", "time": "0001-01-01T00:00:00"})
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    result = CliRunner().invoke(app, ["ingest", str(path), "--user", "mallory", "--db", db])
    assert result.exit_code == 2, result.output
    assert "out of range" in result.output
    assert count_turns(db) == 0


def test_import_with_list_metadata_exits_2_and_stores_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'm.db'}"
    records = [
        {"type": "session", "id": 1, "conversation_id": "c", "started_at": "2023-01-01T00:00:00"},
        {"type": "turn", "id": 1, "session": 1, "conversation_id": "c", "role": "user", "text": "ok", "event_time": "2023-01-01T00:00:00"},
        {"type": "turn", "id": 2, "session": 1, "conversation_id": "c", "role": "user", "text": "x", "event_time": "2023-01-01T00:00:00",
         "metadata": [1, 2]},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    result = CliRunner().invoke(app, ["memory", "import", str(path), "--user", "mallory", "--db", db])
    assert result.exit_code == 2, result.output
    assert "record 3" in result.output and "metadata must be a JSON object" in result.output
    assert count_turns(db) == 0
