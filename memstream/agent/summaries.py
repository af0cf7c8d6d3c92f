"""Session summaries: the LLM's when a backend is given, an extractive one otherwise."""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from memstream.agent import prompts
from memstream.backends.base import BackendError, ChatBackend
from memstream.memory.model import Turn

STOP = set("the a an and or but to of in on at for with is are was were be i you it that this my your we me so just".split())


def extractive_summary(turns: Sequence[Turn], sentences: int = 3) -> str:
    """The sentences with the most frequent content words, in their original order, prefixed with who said them."""
    candidates = []
    for turn in turns:
        for sentence in re.split(r"(?<=[.!?])\s+", turn.text):
            if len(sentence) > 20:
                candidates.append((turn, sentence.strip()))
    if not candidates:
        return " ".join(t.text for t in turns)[:300]
    counts = Counter(w for _, s in candidates for w in re.findall(r"[a-z']+", s.lower()) if w not in STOP)

    def score(item):
        words = [w for w in re.findall(r"[a-z']+", item[1].lower()) if w not in STOP]
        return sum(counts[w] for w in words) / (len(words) + 3)

    best = sorted(range(len(candidates)), key=lambda i: score(candidates[i]), reverse=True)[:sentences]
    return " ".join(f"{candidates[i][0].speaker or candidates[i][0].role}: {candidates[i][1]}" for i in sorted(best))[:600]


def summarize_session(turns: Sequence[Turn], backend: ChatBackend | None = None, max_chars: int = 6000) -> str:
    if backend is not None:
        transcript = "\n".join(f"{t.speaker or t.role}: {t.text}" for t in turns)[-max_chars:]
        try:
            reply = backend.complete([{"role": "user", "content": prompts.SESSION_SUMMARY.format(transcript=transcript)}], max_tokens=120, temperature=0.0).strip()
        except BackendError:
            reply = ""
        if len(reply) >= 20:
            return reply
    return extractive_summary(turns)
