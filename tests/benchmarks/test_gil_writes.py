"""benchmarks/gil_writes.py, the measurement behind server.switch_interval_ms, and the setting itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gil_writes  # noqa: E402


def test_a_configuration_writes_turns_and_puts_the_switch_interval_back():
    before = sys.getswitchinterval()
    row = gil_writes.run(writers=2, busy=1, interval_ms=0.5, seconds=0.5)
    assert sys.getswitchinterval() == before
    assert row["adds"] > 0 and row["adds/s"] > 0 and row["p50 ms"] <= row["p99 ms"]


def test_the_server_process_takes_its_switch_interval_from_the_settings(monkeypatch, tmp_path):
    import uvicorn

    from memstream.config import load_settings
    from memstream.server import app as server_app

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(sys.getswitchinterval()))
    monkeypatch.setattr(server_app, "create_app", lambda settings, backend=None: object())
    before = sys.getswitchinterval()
    try:
        server_app.serve(load_settings(home=str(tmp_path), server={"switch_interval_ms": 0.25}), host="127.0.0.1", port=0)
    finally:
        sys.setswitchinterval(before)
    assert ran == [pytest.approx(0.00025)]


def test_a_switch_interval_out_of_range_is_a_settings_error(tmp_path):
    from memstream.config import ConfigError, load_settings

    for bad in (0, 0.01, 500):
        with pytest.raises((ConfigError, ValueError), match="switch_interval_ms"):
            load_settings(home=str(tmp_path), server={"switch_interval_ms": bad})
