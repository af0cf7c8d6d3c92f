"""The examples run as written (with a scripted backend injected, so no model is loaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from memstream.backends.scripted import ScriptedBackend

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer_from_prompt(messages) -> str:
    # Answers only when the fact reached the prompt from memory (the question itself does not name the city).
    context = " ".join(m["content"] for m in messages[:-1])
    return "Your sister lives in Lisbon." if "Lisbon" in context else "I don't know."


def test_memory_bot_recalls_a_fact_in_a_new_conversation(tmp_path, capsys):
    bot = load_example("memory_bot")
    backend = ScriptedBackend(respond=answer_from_prompt)
    assert bot.main(backend=backend, home=str(tmp_path)) == "Your sister lives in Lisbon."
    out = capsys.readouterr().out
    assert "remembered [2024-04-01] My sister Ines moved to Lisbon in March." in out
    assert out.rstrip().endswith("bot: Your sister lives in Lisbon.")
    assert (tmp_path / "memstream.db").exists()  # the memory lives where the caller said


def test_memory_bot_is_short():
    lines = (EXAMPLES / "memory_bot.py").read_text().splitlines()
    assert len(lines) < 40
