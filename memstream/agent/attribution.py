"""Who said it: questions that name one of the people in a memory.

In a conversation between two people nearly every turn names the other one ("Thanks, Caroline!"),
so a name in the query matches the wrong turns: it is dropped from the search query and used
afterwards instead, to check that the evidence is about the person asked about. When the question
says "What did Caroline realize after her charity race?" and the evidence is Melanie telling her own
race ("The charity race made me realize ...") and Caroline replying to it ("So proud of you!"), the
honest answer is that nothing says Caroline did it; answering with Melanie's story would put words in
Caroline's mouth.

The decision weighs whose experience the evidence describes, sentence by sentence, not which turn
scores best (in a two-person dialogue the reply to someone's story scores close to the story itself):
- a sentence counts only if it has some of the question's content words (names dropped), and it
  counts as many of them as it has;
- in the first person ("I ran a race") it is about its speaker; in the second person ("your race",
  "What inspired you to take that photo?") about the listener; both: half each; neither: its speaker;
  a question not put to the listener ("Where is it?") is about nobody;
- the listener of the asked-about person is someone else; the listener of anyone else is the asked-about
  person when the conversation has two people or the turn names them, and unknown otherwise;
- hit i (0-based, best first) weighs 1 / (1 + `rank_decay` * i).
It answers when the best memory is the asked-about person's own turn with some of the question's words in
a sentence about them. Otherwise it abstains when the evidence about other people weighs at least
`min_other` and the asked-about person's share of all of it is under `max_share`; else it answers (a
wrong "not mentioned" on an answerable question costs a user more than a borrowed answer costs a benchmark). Turns of roles (user,
assistant) are about nobody here. The three values are chosen by leave-one-conversation-out on the
LoCoMo dev set (memstream/benchmarks/attribution_tuning.py, reports/attribution_loco.md).
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
    """Whose memory the evidence mostly is (the best-ranked other person's turn that weighs for someone else)."""
    share: float
    """The asked-about person's share of the evidence (0: none of it is about them)."""


def _name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w'])" + re.escape(name) + r"(?:'s|’s)?(?![\w'])")


def named_people(text: str, speakers: set[str] | Sequence[str]) -> list[str]:
    """The speakers (people, not roles) whose name appears in `text` as a word, case-sensitively."""
    return sorted(s for s in speakers if is_person(s) and _name_pattern(s).search(text))


def strip_names(query: str, names: Sequence[str]) -> str:
    """The query without these names (and their possessive), or the query itself if nothing would be left."""
    stripped = query
    for name in names:
        stripped = _name_pattern(name).sub(" ", stripped)
    stripped = re.sub(r"\s+", " ", stripped).strip()
    return stripped if re.search(r"\w", stripped) else query


def is_person(speaker: str | None) -> bool:
    return bool(speaker) and speaker.lower() not in ROLE_NAMES


@dataclass(frozen=True)
class AttributionParams:
    rank_decay: float = 0.5
    """Hit i (0-based) weighs 1 / (1 + rank_decay * i)."""
    max_share: float = 0.3
    """Abstain only when the asked-about person's share of the weighed evidence is under this..."""
    min_other: float = 5.0
    """...and the evidence about other people weighs at least this (matched question words, rank-weighted)."""


_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|our|ours|us)\b", re.IGNORECASE)
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|you've|you'd|you'll|yours|yourself)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer()


def query_terms(query: str) -> frozenset[str]:
    """The query's content words, stemmed as the lexical index stems them."""
    return frozenset(_tokenizer()(query))


def sentence_about(sentence: str) -> tuple[float, float]:
    """(share about its speaker, share about the listener) of one sentence, from its grammatical person."""
    first, second = bool(_FIRST_PERSON.search(sentence)), bool(_SECOND_PERSON.search(sentence))
    if sentence.rstrip().endswith("?"):
        return (0.0, 1.0) if second else (0.0, 0.0)
    if first and second:
        return 0.5, 0.5
    return (0.0, 1.0) if second else (1.0, 0.0)


def listener_of(speaker: str | None, asked_about: str, people: Sequence[str], text: str) -> str | None:
    """Who a turn's "you" is: someone other than the asked-about person when they speak; the asked-about person
    when the conversation has two people or the turn names them; None when unknown."""
    if speaker == asked_about:
        return ""  # someone else, not named: not the asked-about person, and not None (unknown)
    persons = {p for p in people if is_person(p)} | {asked_about}
    if len(persons) == 2 or _name_pattern(asked_about).search(text):
        return asked_about
    return None


@dataclass(frozen=True)
class EvidenceHit:
    """What the decision reads of one retrieval hit (benchmarks save the texts to tune without re-retrieving)."""

    speaker: str | None
    fused: float
    about_asked: float = 0.0
    """The question's words in its sentences about the asked-about person."""
    about_others: float = 0.0
    """The question's words in its sentences about someone else."""

    @classmethod
    def from_text(cls, speaker: str | None, fused: float, text: str, asked_about: str, people: Sequence[str], terms: frozenset[str]) -> "EvidenceHit":
        if not is_person(speaker):
            return cls(speaker, float(fused))
        listener = listener_of(speaker, asked_about, people, text)
        asked = others = 0.0
        for sentence in _SENTENCE_END.split(text):
            matched = len(terms & set(_tokenizer()(sentence)))
            if not matched:
                continue
            of_speaker, of_listener = sentence_about(sentence)
            for person, share in ((speaker, of_speaker), (listener, of_listener)):
                if person == asked_about:
                    asked += share * matched
                elif person is not None:
                    others += share * matched
        return cls(speaker, float(fused), asked, others)


def attribution_params(agent_settings: Any) -> AttributionParams:
    """The decision's parameters from AgentSettings."""
    return AttributionParams(agent_settings.attribution_rank_decay, agent_settings.attribution_max_share, agent_settings.attribution_min_other)


def weighed_evidence(hits: Sequence[EvidenceHit], rank_decay: float) -> tuple[float, float]:
    """(about the asked-about person, about others), each hit weighed by its rank."""
    asked = others = 0.0
    for rank, hit in enumerate(hits):
        weight = 1.0 / (1.0 + rank_decay * rank)
        asked += weight * hit.about_asked
        others += weight * hit.about_others
    return asked, others


def abstains(asked_about: str, hits: Sequence[EvidenceHit], params: AttributionParams, weighed: tuple[float, float] | None = None) -> bool:
    """The decision itself: True when the evidence is mostly about someone else. `weighed`: weighed_evidence(hits,
    params.rank_decay) when the caller has it (tuning reuses it across the grid)."""
    if hits and hits[0].speaker == asked_about and hits[0].about_asked > 0:
        return False  # the best memory is the person speaking about the question: answer, whatever follows it
    asked, others = weighed if weighed is not None else weighed_evidence(hits, params.rank_decay)
    return others > 0 and others >= params.min_other and asked / (asked + others) < params.max_share


def decide_attribution(asked_about: str, hits: Sequence[EvidenceHit], params: AttributionParams) -> Misattribution | None:
    """A Misattribution when the evidence is mostly about someone else; None (answer) otherwise."""
    asked, others = weighed_evidence(hits, params.rank_decay)
    if not abstains(asked_about, hits, params, (asked, others)):
        return None
    owner = next((h.speaker for h in hits if h.about_others > 0 and h.speaker != asked_about), None)
    owner = owner or next((h.speaker for h in hits if is_person(h.speaker) and h.speaker != asked_about), "someone else")
    return Misattribution(asked_about, owner, asked / (asked + others))


def check_attribution(asked_about: str, hits: Sequence, params: AttributionParams, query: str, people: Sequence[str]) -> Misattribution | None:
    """The decision on retrieval hits (`.turn.speaker`, `.turn.text`, `.fused_score`), best first; `query` is the
    search query (names dropped) and `people` the conversation's speakers."""
    terms = query_terms(query)
    return decide_attribution(asked_about, [EvidenceHit.from_text(h.turn.speaker, h.fused_score, h.turn.text, asked_about, people, terms) for h in hits], params)


def check_attribution_margin(asked_about: str, hits: Sequence[EvidenceHit], min_margin: float) -> float | None:
    """The single-margin rule of the first release (kept for the tuning report's comparison): the margin when the
    best hit is someone else's and beats `asked_about`'s best fused score by more than `min_margin`, else None.
    A person with no hit at all is scored as the last hit, so the margin stays on the scale of the list."""
    if not hits:
        return None
    best = hits[0]
    if best.speaker == asked_about or not is_person(best.speaker):
        return None
    own = [h.fused for h in hits if h.speaker == asked_about]
    margin = best.fused - (max(own) if own else hits[-1].fused)
    return margin if margin > min_margin else None
