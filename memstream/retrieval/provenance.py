"""Provenance in ranking: a person's own statement outranks an assistant reply that only restates it.

In a live chat the assistant's replies are stored too (LongMemEval asks about them, so they stay searchable),
and a reply that repeats the user's words ("Mochi is a Japanese cat named Mochi.") matches a question about
them as well as the user's statement does, or a hair better. Whoever said it first is the source: when an
assistant hit ranks above a turn by someone else whose words it mostly repeats, that turn moves up to just
above it. Nothing is dropped, and the scores are left as fused (the evidence shows what was measured).
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

H = TypeVar("H")

RESTATES = 0.5
"""An assistant reply restates a turn when at least this share of its content words are in that turn."""
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the and or but of to in on at for with about from by is are was were be been am do does did have has had "
    "i you he she it we they me him her us them my your his its our their this that these those so as not no yes "
    "what when where who which how named called".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def is_assistant(hit) -> bool:
    return (hit.turn.role or "").lower() == "assistant"


def restates(reply: str, statement: str, threshold: float = RESTATES) -> bool:
    return _restates_words(content_words(reply), content_words(statement), threshold)


def _restates_words(said: set[str], source: set[str], threshold: float = RESTATES) -> bool:
    return bool(said) and len(said & source) / len(said) >= threshold


def prefer_own_statements(hits: Sequence[H]) -> list[H]:
    """The hits reordered so that no assistant reply stays above a non-assistant turn it restates; ranks renumbered."""
    order = list(hits)
    words: dict[int, set[str]] = {}  # id(hit) -> its content words: each text is split once, not once per pair

    def words_of(hit) -> set[str]:
        found = words.get(id(hit))
        if found is None:
            found = words[id(hit)] = content_words(hit.turn.text)
        return found

    def restated(reply, statement) -> bool:
        return _restates_words(words_of(reply), words_of(statement))

    i = 0
    while i < len(order):
        hit = order[i]
        if is_assistant(hit):
            source = next((j for j in range(i + 1, len(order)) if not is_assistant(order[j]) and restated(hit, order[j])), None)
            if source is not None:
                order.insert(i, order.pop(source))
                i += 1  # the reply itself is now one further down; look at it again there
                continue
        i += 1
    for rank, hit in enumerate(order, 1):
        if hasattr(hit, "rank"):
            hit.rank = rank
    return order
