"""Fact extraction: short statements about people, with a subject key, that point back to turns.

The heuristic extractor needs no model and catches the facts users update most (job, home,
relationships, pets, personal bests, favourites, plans). The LLM extractor asks for
"subject | fact" lines and falls back to the heuristic whenever the reply cannot be parsed,
which is what a 135M model usually sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memstream.agent import prompts
from memstream.backends.base import BackendError, ChatBackend
from memstream.memory.model import Turn


@dataclass
class ExtractedFact:
    subject: str
    text: str


# (subject suffix, pattern on first-person text); group "value" is the fact's object.
FIRST_PERSON_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("job", re.compile(r"\bI(?:'m| am) (?:now )?(?:working|a|an) (?:as (?:a|an) )?(?P<value>[\w\s-]{3,40}?)(?: at (?P<where>[\w\s&.-]{2,40}))?[.,!]", re.I)),
    ("job", re.compile(r"\bI (?:now )?work (?:at|for) (?P<value>[\w\s&.-]{2,40}?)[.,!]", re.I)),
    ("job", re.compile(r"\b(?:started|got) a (?:new )?job (?:at|as) (?P<value>[\w\s&.-]{2,40}?)[.,!]", re.I)),
    ("home", re.compile(r"\bI (?:just )?(?:moved|relocated) to (?P<value>[\w\s,.-]{2,40}?)[.!]", re.I)),
    ("home", re.compile(r"\bI live in (?P<value>[\w\s,.-]{2,40}?)[.!]", re.I)),
    ("personal_best", re.compile(r"\bmy (?:new )?(?:personal best|PB|record)(?: time)?(?: in (?:the )?(?P<what>[\w\s-]{2,30}?))? (?:is|was|of) (?P<value>[\w\s:.]{2,30}?)[.,!]", re.I)),
    ("pet", re.compile(r"\bI (?:have|got|adopted) a (?:new )?(?P<what>dog|cat|puppy|kitten|pet|bird|rabbit|hamster)(?: named| called)? (?P<value>[A-Z]\w+)", re.I)),
    ("relationship", re.compile(r"\bmy (?P<what>wife|husband|partner|girlfriend|boyfriend|son|daughter|sister|brother|mother|mom|father|dad)(?:'s name)? (?:is )?(?:named |called )?(?P<value>[A-Z]\w+)", re.I)),
    ("favorite", re.compile(r"\bmy fav(?:ou?rite) (?P<what>[\w\s]{2,20}?) is (?P<value>[\w\s'-]{2,40}?)[.,!]", re.I)),
    ("plan", re.compile(r"\bI(?:'m| am) (?:planning|going) to (?P<value>[\w\s,'-]{4,60}?)[.,!]", re.I)),
]


THIRD_PERSON = {"work": "works", "have": "has", "live": "lives", "moved": "moved", "got": "got", "adopted": "adopted"}


def _subject_owner(turn: Turn) -> str:
    if turn.speaker and turn.speaker not in ("user", "assistant", "system"):
        return re.sub(r"\W+", "_", turn.speaker.strip().lower())
    return "user" if turn.role == "user" else "assistant"


def extract_facts_heuristic(turn: Turn) -> list[ExtractedFact]:
    owner = _subject_owner(turn)
    who = turn.speaker if owner not in ("user", "assistant") else ("The user" if owner == "user" else "The assistant")
    text = turn.text + "."
    facts: list[ExtractedFact] = []
    seen: set[str] = set()
    for suffix, pattern in FIRST_PERSON_PATTERNS:
        for match in pattern.finditer(text):
            value = " ".join(match.group("value").split())
            groups = match.groupdict()
            what = " ".join((groups.get("what") or "").split()).lower()
            subject = f"{owner}.{suffix}"
            if what and suffix in ("personal_best", "favorite", "relationship", "pet"):
                subject += "." + re.sub(r"\W+", "_", what)
            if suffix == "plan":
                subject = f"{owner}.plan.{'_'.join(value.lower().split()[:2])}"
            if subject in seen:
                continue
            seen.add(subject)
            sentence = match.group(0).strip().rstrip(".,!")
            sentence = re.sub(r"^\bI(?:'m| am)\b", f"{who} is", sentence)
            sentence = re.sub(r"^\bI\b(?: (just|now))? (\w+)", lambda m: f"{who}{' ' + m.group(1) if m.group(1) else ''} {THIRD_PERSON.get(m.group(2).lower(), m.group(2))}", sentence)
            sentence = re.sub(r"^\bmy\b", f"{who}'s", sentence, flags=re.I)
            facts.append(ExtractedFact(subject, sentence))
    return facts


def parse_fact_lines(reply: str, owner: str) -> list[ExtractedFact] | None:
    if reply.strip().lower().startswith("none"):
        return []
    facts = []
    for line in reply.splitlines():
        if "|" not in line:
            continue
        subject, _, text = line.partition("|")
        subject = re.sub(r"[^\w.]+", "_", subject.strip().lower()).strip("_.")
        text = text.strip()
        if not subject or len(text) < 4 or len(text) > 300:
            continue
        if "." not in subject:
            subject = f"{owner}.{subject}"
        facts.append(ExtractedFact(subject[:100], text))
    return facts or None


def extract_facts(turn: Turn, backend: ChatBackend | None = None) -> list[ExtractedFact]:
    """Facts in one turn: the LLM's when it answers in the format, the heuristic's otherwise."""
    if backend is not None:
        prompt = prompts.FACT_EXTRACTION.format(speaker=turn.speaker or turn.role, date=f"{turn.event_time:%Y-%m-%d}", text=turn.text[:2000])
        try:
            reply = backend.complete([{"role": "user", "content": prompt}], max_tokens=128, temperature=0.0)
        except BackendError:
            reply = ""
        parsed = parse_fact_lines(reply, _subject_owner(turn))
        if parsed is not None:
            return parsed
    return extract_facts_heuristic(turn)
