"""Who said it: questions that name one of the people in a memory.

In a conversation between two people nearly every turn names the other one ("Thanks, Caroline!"),
so a name in the query matches the wrong turns: it is dropped from the search query and used
afterwards instead, to check that the best-matching memory comes from the person asked about.
When the question says "What did Caroline realize after her charity race?" and the memory that
fits it best is something Melanie said, with nothing as close from Caroline, the honest answer is
that nothing says Caroline did it; answering with Melanie's story would put words in Caroline's mouth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

ROLE_NAMES = frozenset({"user", "assistant", "system", "tool"})


@dataclass(frozen=True)
class Misattribution:
    asked_about: str
    speaker: str
    """Who said the best-matching memory."""
    margin: float
    """Fused score of the best memory minus the best one from `asked_about`."""


def _name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w'])" + re.escape(name) + r"(?:'s|’s)?(?![\w'])")


def named_people(text: str, speakers: set[str] | Sequence[str]) -> list[str]:
    """The speakers (people, not roles) whose name appears in `text` as a word, case-sensitively."""
    return sorted(s for s in speakers if s and s.lower() not in ROLE_NAMES and _name_pattern(s).search(text))


def strip_names(query: str, names: Sequence[str]) -> str:
    """The query without these names (and their possessive), or the query itself if nothing would be left."""
    stripped = query
    for name in names:
        stripped = _name_pattern(name).sub(" ", stripped)
    stripped = re.sub(r"\s+", " ", stripped).strip()
    return stripped if re.search(r"\w", stripped) else query


def check_attribution(asked_about: str, hits: Sequence, min_margin: float) -> Misattribution | None:
    """A Misattribution when the best hit is someone else's and beats `asked_about`'s best by more than `min_margin`.

    `hits` are retrieval hits, best first, with `.turn.speaker` and `.fused_score`. A person with no hit
    at all is scored as the last hit, so the margin stays on the scale of the list.
    """
    if not hits:
        return None
    best = hits[0]
    if best.turn.speaker in (None, asked_about) or best.turn.speaker.lower() in ROLE_NAMES:
        return None
    own = [h.fused_score for h in hits if h.turn.speaker == asked_about]
    margin = best.fused_score - (max(own) if own else hits[-1].fused_score)
    if margin <= min_margin:
        return None
    return Misattribution(asked_about, best.turn.speaker, margin)
