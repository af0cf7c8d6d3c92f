"""Whole-transcript prompts: a fixed prefix for every question, and a newest-lines cut that keeps its session date."""

from __future__ import annotations

from datetime import datetime

from memstream.agent import prompts
from memstream.benchmarks.long_context import newest_lines, speakers, transcript_lines, transcript_prompt
from memstream.memory.model import NewSession, NewTurn


class WordTokenizer:
    """One id per whitespace-separated word; a ChatML-like template."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        text = "".join(f"<start> {m['role']}\n{m['content']} <end>\n" for m in messages)
        return text + ("<start> assistant\n" if add_generation_prompt else "")


def sessions() -> list[NewSession]:
    out = []
    for number in range(3):
        when = datetime(2023, 5, 1 + 7 * number, 13, 0)
        turns = [NewTurn("user" if i % 2 == 0 else "assistant", f"session {number} line {i} went well", ["Ann", "Bo"][i % 2],
                         when, {"source_id": f"D{number + 1}:{i + 1}"}) for i in range(4)]
        out.append(NewSession("c", turns, when))
    return out


def test_the_prefix_holds_every_dated_session_and_each_question_only_adds_a_suffix():
    tok = WordTokenizer()
    lines = transcript_lines(sessions())
    assert speakers(sessions()) == ("Ann", "Bo")
    assert lines[0].text == "Session 1 (1 May 2023):" and lines[5].text == "Session 2 (8 May 2023):"
    assert lines[1].text == "Ann: session 0 line 0 went well" and lines[1].source == "D1:1"
    built = transcript_prompt(tok, ("Ann", "Bo"), lines)
    assert built.lines == 15 and len(built.sources) == 12
    suffix = built.suffix(tok, "Where did Ann go?")
    # The prefix ends where the user message starts; the suffix is the question, the instruction, the tail.
    whole = tok(tok.apply_chat_template([
        {"role": "system", "content": prompts.FULL_TRANSCRIPT.format(speaker_a="Ann", speaker_b="Bo") + "\n\n"
         + "\n".join(line.text for line in lines)},
        {"role": "user", "content": f"Where did Ann go?\n{prompts.SHORT_ANSWER}"}]))["input_ids"]
    assert built.prefix + suffix == whole


def test_newest_lines_fit_the_budget_and_keep_the_header_of_the_session_they_start_in():
    tok = WordTokenizer()
    lines = transcript_lines(sessions())
    whole = len(transcript_prompt(tok, ("Ann", "Bo"), lines).prefix)
    cut = newest_lines(tok, ("Ann", "Bo"), lines, whole - 20)
    assert len(cut.prefix) <= whole - 20
    text = " ".join(str(i) for i in cut.prefix)
    assert cut.sources < transcript_prompt(tok, ("Ann", "Bo"), lines).sources
    assert "D3:4" in cut.sources and "D1:1" not in cut.sources
    # The cut falls inside session 2: its header leads, then its newest kept turns.
    header = tok("Session 2 (8 May 2023):")["input_ids"]
    assert " ".join(map(str, header)) in text
    assert newest_lines(tok, ("Ann", "Bo"), lines, whole).lines == len(lines)
