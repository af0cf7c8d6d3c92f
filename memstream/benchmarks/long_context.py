"""Whole-transcript question answering: one LoCoMo conversation put in the prompt as it is.

The transcript is the conversation session by session: a dated header line per session, then one
`speaker: text` line per turn (relative dates annotated and text quoted as the agent's evidence
lines are). The prompt is the model's chat template over a system message (the FULL_TRANSCRIPT
instruction and the transcript) and a user message (the question and SHORT_ANSWER). It is split
where the user message starts: the prefix is the same token ids for every question (prefilled
once, backends/prefix.py) and each question adds only its suffix.

`newest_lines` keeps the newest lines that fit a token budget (cut at a line boundary), with the
header of the session the cut falls in, so a shortened transcript still dates its first turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from memstream.agent import prompts
from memstream.agent.compose import annotate_relative_dates, day, quote
from memstream.memory.model import NewSession

_SLOT = "\ue000"  # a private-use character, never in a transcript: marks where the user message goes


@dataclass(frozen=True)
class TranscriptLine:
    text: str
    header: int
    """Index of this line's session header line (a header points at itself)."""
    source: str | None = None
    """The turn's dia_id ("D3:7"); None for a header."""


def transcript_lines(sessions: Sequence[NewSession]) -> list[TranscriptLine]:
    lines: list[TranscriptLine] = []
    for number, session in enumerate(sessions, start=1):
        header = len(lines)
        when = f" ({day(session.started_at)})" if session.started_at else ""
        lines.append(TranscriptLine(f"Session {number}{when}:", header))
        for turn in session.turns:
            text = annotate_relative_dates(turn.text, turn.event_time) if turn.event_time else turn.text
            lines.append(TranscriptLine(f"{quote(turn.speaker or turn.role)}: {quote(text)}", header,
                                        turn.metadata.get("source_id")))
    return lines


def speakers(sessions: Sequence[NewSession]) -> tuple[str, str]:
    """The conversation's first two speakers, in order of appearance."""
    seen = list(dict.fromkeys(t.speaker or t.role for s in sessions for t in s.turns))
    return (seen[0] if seen else "someone", seen[1] if len(seen) > 1 else "someone else")


@dataclass(frozen=True)
class TranscriptPrompt:
    """Token ids of the shared prefix and the text that follows each question."""

    prefix: list[int]
    tail: str
    """The chat template after the user message (end of turn, assistant header)."""
    lines: int
    """Transcript lines in the prefix (session headers included)."""
    sources: frozenset[str]
    """dia_ids of the turns in the prefix (which evidence a question's prompt holds)."""

    def suffix(self, tokenizer, question: str) -> list[int]:
        """The question's token ids, tokenised on their own (so the prefix ids never change)."""
        return tokenizer(f"{question}\n{prompts.SHORT_ANSWER}{self.tail}", add_special_tokens=False)["input_ids"]


def transcript_prompt(tokenizer, pair: tuple[str, str], lines: Sequence[TranscriptLine]) -> TranscriptPrompt:
    system = prompts.FULL_TRANSCRIPT.format(speaker_a=pair[0], speaker_b=pair[1])
    body = "\n".join(line.text for line in lines)
    messages = [{"role": "system", "content": f"{system}\n\n{body}"}, {"role": "user", "content": _SLOT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head, found, tail = text.partition(_SLOT)
    if not found:
        raise ValueError("the chat template dropped the user message")
    return TranscriptPrompt(tokenizer(head, add_special_tokens=False)["input_ids"], tail, len(lines),
                            frozenset(line.source for line in lines if line.source))


def with_header(lines: Sequence[TranscriptLine], start: int) -> list[TranscriptLine]:
    """lines[start:], led by the header of the session lines[start] belongs to."""
    kept = list(lines[start:])
    if kept and kept[0].header != start:
        kept.insert(0, lines[kept[0].header])
    return kept


def newest_lines(tokenizer, pair: tuple[str, str], lines: Sequence[TranscriptLine], budget: int) -> TranscriptPrompt:
    """The prompt over the newest lines whose prefix is at most `budget` tokens (counted, not estimated)."""
    cost = [len(tokenizer(line.text, add_special_tokens=False)["input_ids"]) + 1 for line in lines]
    fixed = len(transcript_prompt(tokenizer, pair, []).prefix)
    start, used = len(lines), fixed
    # A first guess from per-line counts (joining lines can merge a token or two), then exact checks.
    while start > 0 and used + cost[start - 1] <= budget:
        start -= 1
        used += cost[start]
    def build(first: int) -> TranscriptPrompt:
        return transcript_prompt(tokenizer, pair, with_header(lines, first))

    built = build(start)
    while len(built.prefix) > budget:
        if start == len(lines):
            raise ValueError(f"a budget of {budget} tokens holds not even the prompt without a transcript")
        start += 1
        built = build(start)
    while start > 0 and len((longer := build(start - 1)).prefix) <= budget:
        start, built = start - 1, longer
    return built
