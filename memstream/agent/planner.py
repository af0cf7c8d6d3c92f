"""Plan a turn (SCM's memory controller): does it need the archive, what to search for, in which time window.

The LLM planner is optional; the heuristic planner always works (also with a 135M model that
cannot follow the two-line format) and is the fallback whenever the LLM reply cannot be parsed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Sequence

from memstream.agent import prompts
from memstream.backends.base import BackendError, ChatBackend
from memstream.memory.model import Turn

SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|yo|thanks|thank you|thx|ok|okay|cool|great|nice|bye|goodbye|good (morning|night|evening)|lol|haha)\b[\s!.?]*$",
    re.IGNORECASE,
)
PAST_MARKERS = re.compile(
    r"\b(remember|recall|told you|mentioned|said|last (time|week|month|year|weekend)|ago|before|earlier|previous|"
    r"when did|what did|where did|who did|did i|did we|have i|had i|was i|were we|my|mine|our|we|i)\b",
    re.IGNORECASE,
)
QUESTION = re.compile(r"\?\s*$|^\s*(who|what|when|where|why|how|which|did|do|does|is|are|was|were|can|could|have|has)\b", re.IGNORECASE)
# Questions whose short answer is a date or period ("When did ...?", "Which year ...?").
WHEN_QUESTION = re.compile(r"^\s*(when|what (date|day|month|year)|which (month|year)|in which (month|year))\b", re.IGNORECASE)
PRONOUN_ONLY = re.compile(r"\b(it|that|this|they|them|he|she|him|her|there|those|these)\b", re.IGNORECASE)
STOPWORDS = set(
    "a an the and or but of to in on at for with about from by is are was were be been am do does did have has had "
    "i you he she it we they me him her us them my your his its our their this that these those what when where who "
    "why how which can could would should will shall may might must not no yes so if then than just also very".split()
)


MAX_QUERY_CHARS = 2000  # a pasted document is stored whole, but searched by its opening


@dataclass
class Plan:
    needs_memory: bool
    query: str
    time_window: Any = None  # retrieval.timeparse.TimeWindow | None
    use_summaries: bool = False
    source: str = "heuristic"  # "heuristic" | "llm"
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        window = self.time_window
        data["time_window"] = (
            {"start": window.start.isoformat(), "end": window.end.isoformat(), "expression": window.expression} if window else None
        )
        return data


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z0-9']+", text.lower()) if w not in STOPWORDS and len(w) > 1]


def heuristic_needs_memory(message: str) -> tuple[bool, str]:
    if SMALL_TALK.match(message):
        return False, "small talk"
    if PAST_MARKERS.search(message):
        return True, "refers to the past or to the user"
    if QUESTION.search(message):
        return True, "a question"
    return False, "a statement with nothing to look up"


def rewrite_query(message: str, flash: Sequence[Turn]) -> str:
    """A standalone query: a short follow-up ("and when was that?") borrows content words from the last turns."""
    message = message.strip()[:MAX_QUERY_CHARS]
    words = content_words(message)
    if len(words) >= 3 or not flash or not PRONOUN_ONLY.search(message):
        return message
    borrowed: list[str] = []
    for turn in reversed(flash[-4:]):
        for word in content_words(turn.text):
            if word not in borrowed and word not in words:
                borrowed.append(word)
        if len(borrowed) >= 8:
            break
    return (message.strip() + " " + " ".join(borrowed[:8])).strip()


def parse_llm_plan(reply: str) -> tuple[bool, str] | None:
    needs = re.search(r"MEMORY:\s*(yes|no)", reply, re.IGNORECASE)
    query = re.search(r"QUERY:\s*(.+)", reply, re.IGNORECASE)
    if not needs or not query or not query.group(1).strip():
        return None
    return needs.group(1).lower() == "yes", query.group(1).strip()[:500]


def plan_turn(
    message: str,
    flash: Sequence[Turn],
    now: datetime,
    backend: ChatBackend | None = None,
    use_llm: bool = False,
    time_expansion: bool = True,
) -> Plan:
    reasons = []
    needs, why = heuristic_needs_memory(message)
    reasons.append(why)
    query = rewrite_query(message, flash)
    source = "heuristic"
    if use_llm and backend is not None:
        flash_text = "\n".join(f"{t.speaker or t.role}: {t.text[:200]}" for t in flash[-6:]) or "(none)"
        try:
            reply = backend.complete(
                [{"role": "user", "content": prompts.PLANNER.format(flash=flash_text, message=message[:2000])}],
                max_tokens=64,
                temperature=0.0,
            )
        except BackendError as exc:
            reasons.append(f"LLM planner failed ({exc}); heuristic used")
        else:
            parsed = parse_llm_plan(reply)
            if parsed is None:
                reasons.append("LLM planner reply unparseable; heuristic used")
            else:
                needs, query = parsed
                source = "llm"
    window = None
    if time_expansion:
        from memstream.retrieval.timeparse import extract_time_window

        window = extract_time_window(message, now)
        if window is not None:
            needs = True
            reasons.append(f"time reference {window.expression!r}")
    return Plan(needs_memory=needs, query=query, time_window=window, source=source, reasons=reasons)
