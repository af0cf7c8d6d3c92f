"""A real start: `memstream chat` in a pseudo-terminal with the default local model
(SmolLM2-135M) and the default embedder, one message, an answer, Ctrl+Q, and the exchange is
in the database afterwards."""

from __future__ import annotations

import os
import re
import sys

import pytest

from memstream.config import load_settings
from memstream.memory import open_memory

pexpect = pytest.importorskip("pexpect")


@pytest.mark.slow
def test_memstream_chat_starts_answers_and_quits_in_a_terminal(tmp_path, isolated_home):
    db_url = f"sqlite:///{tmp_path / 'chat.db'}"
    env = dict(os.environ)
    env.update(
        {
            "TERM": "xterm-256color",
            "MEMSTREAM_HOME": str(isolated_home),
            "MEMSTREAM_AGENT__MAX_REPLY_TOKENS": "16",  # a short answer keeps the test quick on a laptop CPU
            "MEMSTREAM_AGENT__ENRICH": "false",
        }
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "memstream.cli", "chat", "--user", "pty", "--db", db_url],
        env=env,
        dimensions=(30, 110),
        encoding="utf-8",
        codec_errors="replace",
        timeout=420,
    )
    try:
        # The status bar says "ready" once the store, the embedder and the model are loaded.
        child.expect("ready")
        child.send("Hello! Please say hi back.")
        child.send("\r")
        # tokens/s appears in the status bar only after an answer has been generated.
        child.expect(r"tok/s")
        seen = child.before + child.after
        child.send("\x11")  # Ctrl+Q, the documented quit key
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before

    with open_memory(load_settings(db_url=db_url), index=False) as memory:
        turns = memory.list_turns("pty")
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[0].text == "Hello! Please say hi back."
    answer = turns[1].text
    assert answer.strip()
    # The answer was on screen: its longest word is in what the terminal received.
    longest = max(re.findall(r"[A-Za-z]{3,}", answer) or [answer.strip()[:3]], key=len)
    assert longest in seen


def test_memstream_chat_with_a_broken_database_url_shows_an_error_screen(tmp_path, isolated_home):
    """No traceback: an error screen names the problem, q quits, and the command exits 2 with one line."""
    db_url = f"sqlite:///{tmp_path / 'no-such-dir' / 'chat.db'}"
    env = dict(os.environ, TERM="xterm-256color", MEMSTREAM_HOME=str(isolated_home))
    child = pexpect.spawn(
        sys.executable, ["-m", "memstream.cli", "chat", "--db", db_url], env=env, dimensions=(24, 80), encoding="utf-8", timeout=120
    )
    try:
        child.expect("Cannot open the memory database")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 2
    assert "Error: cannot open database" in child.before
    assert "Traceback" not in child.before
