"""Who said it: questions that name one of the people in a memory.

In a conversation between two people nearly every turn names the other one ("Thanks, Caroline!"),
so a name in the query matches the wrong turns: it is dropped from the search query and used
afterwards instead, to check that the best-matching memory comes from the person asked about.
When the question says "What did Caroline realize after her charity race?" and the memory that
fits it best is something Melanie said, with nothing as close from Caroline, the honest answer is
that nothing says Caroline did it; answering with Melanie's story would put words in Caroline's mouth.

The decision reads several signals of the evidence and abstains only when all of them point away from the
person asked about (a wrong "not mentioned" on an answerable question costs a user more than a borrowed
answer costs a benchmark):
- who says the best memory (a role, or the person asked about: answer);
- where the person's own first turn ranks (within `own_rank`: answer);
- how their best own turn scores against the best one (at least `own_ratio` of it: answer);
- whether the top evidence names them at all (with `mention_counts`, a top turn said to or about them: answer);
- whose story the best memory tells: a turn in the first person that does not address the listener ("I ran
  a charity race and realized ...", not "you said ...") and shares more of the question's words than the
  person's own best turn is its speaker's own experience; then their own turn must reach `story_ratio` of
  its score instead of `own_ratio` (None: this signal is not read). In a two-person dialogue the reply to
  someone's story ("That's great, Melanie!") scores close to it through the shared round key, so the score
  ratio alone lets most borrowed answers through.
The parameters are chosen by leave-one-conversation-out on the LoCoMo dev set
(memstream/benchmarks/attribution_tuning.py, reports/attribution_loco.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from memstream.retrieval.lexical import Tokenizer

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


@dataclass(frozen=True)
class AttributionParams:
    own_rank: int = 1
    """The person's own turn within the top this many counts as their presence: answer."""
    own_ratio: float = 0.8
    """Their best own turn scoring at least this share of the best hit's fused score: answer."""
    mention_counts: bool = True
    """A top-`own_rank` turn by someone else that names them (said to or about them) counts as their presence."""
    story_ratio: float | None = 1.01
    """When the best turn tells its speaker's own story and matches the question's words better than the person's
    own best turn, that turn must score at least this share of the best (instead of `own_ratio`) to answer."""


_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|our|ours|us)\b", re.IGNORECASE)
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|you've|you'd|you'll|yours|yourself)\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer()


def query_terms(query: str) -> frozenset[str]:
    """The query's content words, stemmed as the lexical index stems them."""
    return frozenset(_tokenizer()(query))


def tells_own_story(text: str) -> bool:
    """First person and not addressed to the listener: the speaker's own experience."""
    return bool(_FIRST_PERSON.search(text)) and not _SECOND_PERSON.search(text)


@dataclass(frozen=True)
class EvidenceHit:
    """What the decision reads of one retrieval hit (benchmarks save these to tune without re-retrieving)."""

    speaker: str | None
    fused: float
    names: tuple[str, ...] = ()
    """Which of the question's named people its text names."""
    own_story: bool = False
    """The text is in the first person and not addressed to the listener (`tells_own_story`)."""
    overlap: int = 0
    """How many of the query's content words (stemmed) the text has."""

    @classmethod
    def from_text(cls, speaker: str | None, fused: float, text: str, people: Sequence[str], terms: frozenset[str] = frozenset()) -> "EvidenceHit":
        return cls(speaker, float(fused), tuple(named_people(text, people)), tells_own_story(text), len(terms & set(_tokenizer()(text))))

    @classmethod
    def of(cls, hit: Any, people: Sequence[str], query: str = "") -> "EvidenceHit":
        return cls.from_text(hit.turn.speaker, hit.fused_score, hit.turn.text, people, query_terms(query))


def attribution_params(agent_settings: Any) -> AttributionParams:
    """The decision's parameters from AgentSettings."""
    return AttributionParams(
        agent_settings.attribution_own_rank, agent_settings.attribution_own_ratio, agent_settings.attribution_mention_counts, agent_settings.attribution_story_ratio
    )


def _is_person(speaker: str | None) -> bool:
    return bool(speaker) and speaker.lower() not in ROLE_NAMES


def decide_attribution(asked_about: str, hits: Sequence[EvidenceHit], params: AttributionParams) -> Misattribution | None:
    """A Misattribution when every signal says the evidence is someone else's; None (answer) otherwise."""
    if not hits:
        return None
    best = hits[0]
    if not _is_person(best.speaker) or best.speaker == asked_about:
        return None
    top = hits[: params.own_rank]
    if any(h.speaker == asked_about for h in top):
        return None
    if params.mention_counts and any(asked_about in h.names for h in top):
        return None
    own_hits = [h for h in hits if h.speaker == asked_about]
    own_best = max(own_hits, key=lambda h: h.fused) if own_hits else None
    ratio = params.own_ratio
    if params.story_ratio is not None and best.own_story and best.overlap > (own_best.overlap if own_best else -1):
        # The best memory is its speaker's own experience and fits the question better than anything they said.
        ratio = max(ratio, params.story_ratio)
    if own_best is not None and best.fused > 0 and own_best.fused >= ratio * best.fused:
        return None
    margin = best.fused - (own_best.fused if own_best else hits[-1].fused)
    return Misattribution(asked_about, best.speaker, margin)


def check_attribution(asked_about: str, hits: Sequence, params: AttributionParams, query: str = "") -> Misattribution | None:
    """The decision on retrieval hits (`.turn.speaker`, `.turn.text`, `.fused_score`), best first; `query` is
    the search query (names dropped) the story signal compares the hits' words with."""
    terms = query_terms(query)
    return decide_attribution(asked_about, [EvidenceHit.from_text(h.turn.speaker, h.fused_score, h.turn.text, [asked_about], terms) for h in hits], params)


def check_attribution_margin(asked_about: str, hits: Sequence, min_margin: float) -> Misattribution | None:
    """The single-margin rule the decision replaced (kept for the tuning report's comparison): a Misattribution
    when the best hit is someone else's and beats `asked_about`'s best by more than `min_margin`.

    `hits` are EvidenceHits, best first. A person with no hit
    at all is scored as the last hit, so the margin stays on the scale of the list.
    """
    if not hits:
        return None
    best = hits[0]
    if best.speaker in (None, asked_about) or best.speaker.lower() in ROLE_NAMES:
        return None
    own = [h.fused for h in hits if h.speaker == asked_about]
    margin = best.fused - (max(own) if own else hits[-1].fused)
    if margin <= min_margin:
        return None
    return Misattribution(asked_about, best.speaker, margin)
