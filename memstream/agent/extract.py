"""Reading the evidence: a short answer drawn from the retrieved turns, before any model writes one.

A 135M model given the right record still rambles or copies the wrong line; the answer to "What did Caroline
research?" is usually a few words of the best record ("...researching adoption agencies for my family").
By question kind, this step picks the span that answers it:

- name  ("what is the name of", "called"): the capitalised words after "named" / "called" / "name is";
- where: the place after in / at / to / from;
- count ("how many / much / long / often / old"): the number phrase;
- what / which: the sentence of the top records that shares the most words with the question (never a
  sentence that is itself a question: in a dialogue the other person's "Which team did you sign with?" echoes
  the question and answers nothing; ties go to the asked-about person's own turn, then to the better-ranked
  record). A sentence sharing fewer than `min_shared` of the question's words is too loose a match to cut an
  answer from, and the model writes instead. Then, by `style`:
  - "after": from after the last shared word (what the sentence says beyond the question), a few words long;
  - "content": the sentence's own content words, in order: what is left once the question's words, function
    words, fillers and time phrases are dropped ("I ran a charity race for mental health last Saturday" ->
    "ran mental health" for "What did the charity race raise awareness for?"). A short answer scored by word
    overlap gains from losing the words that only restate the question; the words that remain are the
    sentence's, not the model's. When the sentence has under two such words ("Crazy thing happened since we
    last talked."), the next sentence of the same turn adds its own: the setting comes first, then the news.

A "what year / which month" question asks when, and gets no span of these kinds (the date step answers it).
When nothing fits, it returns None and the model writes the answer. Which kinds are on, the style and the
least shared words are settings (agent.extract_kinds, agent.extract_style, agent.extract_min_shared;
benchmarks/answer_loco.py chooses them by leave-one-conversation-out on LoCoMo). Questions that offer choices
("(a) ... (b) ...") are never extracted: the answer is one of the choices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from functools import lru_cache

from nltk.stem import PorterStemmer

KINDS = ("name", "where", "count", "what")
STYLES = ("after", "content")
MIN_SHARED = (1, 2, 3, 4)
"""The values of `min_shared` the tuning tries."""
TOP_RECORDS = 3
MAX_SPAN_WORDS = 8
MIN_CONTENT_WORDS = 2

_CHOICES = re.compile(r"\(a\).*\(b\)", re.I | re.S)
_NAME_Q = re.compile(r"\bname(?:s|d)?\b|\bcalled\b", re.I)
_WHERE_Q = re.compile(r"^\s*where\b", re.I)
_COUNT_Q = re.compile(r"^\s*how (many|much|long|often|old)\b", re.I)
_WHAT_Q = re.compile(r"^\s*(what|which)\b", re.I)
# "What year did he start?" asks when, like "when": a date, which no span of these kinds is (the date step's job).
_TIME_Q = re.compile(r"^\s*(?:what|which)\s+(?:year|month|day|date|time|week|weekend|season|decade|century)(?![\w-])", re.I)
_NAME = re.compile(r"\b(?:named|called|name is|name's|name was)\s+((?:[A-Z][\w'-]+)(?:\s+[A-Z][\w'-]+)*)")
_PLACE = re.compile(r"\b(?:in|at|to|from|near|visited|visiting)\s+((?:the\s+)?[A-Z][\w'-]+(?:\s+(?:of\s+)?[A-Z][\w'-]+)*)")
_NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|a few|a couple of|several|once|twice"
_COUNT = re.compile(rf"\b((?:\d+(?:[.,]\d+)?|{_NUMBER_WORDS})(?:\s+(?!and\b|but\b)[a-z]+){{0,2}})", re.I)
_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]*")
"""A sentence with its closing punctuation, so a question ("...?") can be told from a statement."""
_WORD = re.compile(r"[\w'-]+")
_QUESTION_STOP = frozenset(
    "what which who whom whose where when why how is are was were be been do does did has have had a an the of to in "
    "on at for with about from by and or that this these those it its their his her them they he she you your my i me "
    "kind type sort some any many much long often old ever there".split()
)


# Words that carry no answer of their own: pronouns, auxiliaries, prepositions, fillers and pleasantries of chat
# ("really", "super", "stuff", "awesome"). Dropped from "content" answers together with the question's words.
_FUNCTION_WORDS = frozenset(
    "i i'm i've i'd i'll me my mine myself we we're we've our ours us you you're you've your yours it it's its is "
    "are was were be been being am a an the and or but so to of in on at for with about from by as into onto over "
    "than then that that's this these those there there's here what's just really very too also like even pretty "
    "super totally definitely actually thing things stuff lot lots gonna got get gets getting can could would "
    "will should might must do does did done doing have has had having not oh wow yeah hey thanks thank "
    "one some all any more most much many such own he she him her his hers they them their theirs it itself "
    "since until while because if though although unless whether who which where when how why what "
    "great amazing awesome cool nice fun excited glad happy lovely wonderful fantastic incredible".split()
)
# Time words: a short answer to a "what" question is not when it happened (that is the date step's job).
_TIME_WORDS = frozenset(
    "recently lately ago once twice last next soon now currently already still again yet ever never always "
    "today tonight yesterday tomorrow morning night weekend week weeks month months year years day days".split()
)

_STEMMER = PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


def stemmed_tokens(word: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", word.lower())]


@dataclass(frozen=True)
class Extraction:
    text: str
    kind: str
    rank: int
    """Which record it came from (1 = best)."""


def question_kind(question: str) -> str | None:
    if _CHOICES.search(question) or _TIME_Q.search(question):
        return None
    if _COUNT_Q.search(question):
        return "count"
    if _WHERE_Q.search(question):
        return "where"
    if _WHAT_Q.search(question) and _NAME_Q.search(question):
        return "name"
    if _WHAT_Q.search(question):
        return "what"
    return None


def _question_stems(question: str, people: Sequence[str]) -> set[str]:
    names = {p.lower() for p in people}
    words = [w for w in _WORD.findall(question) if w.lower() not in _QUESTION_STOP and w.lower().rstrip("'s") not in names]
    return {s for w in words for s in stemmed_tokens(w)}


def _capitalised_outside(span: str, question: str) -> bool:
    return span.lower() not in question.lower()


@dataclass(frozen=True)
class _Pick:
    rank: int
    sentence: str
    words: list[str]
    following: str | None
    """The next sentence of the same record, when it is a statement."""
    shared: int
    """How many of the question's (stemmed) words it shares."""


def _best_sentence(question_stems: set[str], texts: Sequence[str], own: Sequence[bool] = ()) -> _Pick | None:
    """The statement sharing the most question words; ties go to the asked-about person's own record (`own`, per
    record), then to the earlier record. Questions are skipped: they restate what is asked and answer nothing."""
    best = None
    best_key: tuple = (0,)
    for rank, text in enumerate(texts, 1):
        sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
        for index, sentence in enumerate(sentences):
            if sentence.endswith("?"):
                continue
            words = _WORD.findall(sentence)
            score = len({s for w in words for s in stemmed_tokens(w)} & question_stems)
            key = (score, bool(own[rank - 1]) if rank <= len(own) else False, -rank)
            if score > 0 and key > best_key:
                following = sentences[index + 1] if index + 1 < len(sentences) and not sentences[index + 1].endswith("?") else None
                best, best_key = _Pick(rank, sentence, words, following, score), key
    return best


def content_words(sentence: str, question_stems: set[str], people: Sequence[str] = (), drop_time: bool = True) -> list[str]:
    """The sentence's words less the question's, function words, the people's names and (`drop_time`) time phrases."""
    from memstream.agent.compose import RELATIVE  # "last week", "two days ago": a time phrase, word by word

    names = {p.lower() for p in people}
    kept = []
    for word in _WORD.findall(RELATIVE.sub(" ", sentence) if drop_time else sentence):
        lowered = word.lower()
        if not re.search(r"[a-z0-9]", lowered) or lowered in _FUNCTION_WORDS or lowered in _QUESTION_STOP or (drop_time and lowered in _TIME_WORDS):
            continue
        if lowered in names or re.sub(r"'s$", "", lowered) in names or set(stemmed_tokens(word)) & question_stems:
            continue
        kept.append(word)
    return kept


def _after_last_shared(words: list[str], question_stems: set[str]) -> str:
    last = max((i for i, w in enumerate(words) if set(stemmed_tokens(w)) & question_stems), default=None)
    if last is None:
        return ""
    return " ".join(words[last + 1 : last + 1 + MAX_SPAN_WORDS])


def extract_answer(
    question: str,
    texts: Sequence[str],
    people: Sequence[str] = (),
    kinds: Sequence[str] = KINDS,
    speakers: Sequence[str | None] = (),
    asked_about: str | None = None,
    style: str = "content",
    min_shared: int = 1,
) -> Extraction | None:
    """The answer span of the question's kind in the top records (`texts`, best first, said by `speakers`), or
    None. `asked_about`: the one person the question names (their own records win ties); `style`: how a "what"
    answer is cut from its sentence; `min_shared`: how many question words that sentence must share (see the
    module docstring)."""
    if style not in STYLES:
        raise ValueError(f"unknown extraction style {style!r} (expected one of {STYLES})")
    kind = question_kind(question)
    if kind is None or kind not in kinds:
        return None
    top = list(texts[:TOP_RECORDS])
    own = [asked_about is not None and speaker == asked_about for speaker in list(speakers)[:TOP_RECORDS]]
    stems = _question_stems(question, people)
    if kind == "name":
        for rank, text in enumerate(top, 1):
            for match in _NAME.finditer(text):
                if _capitalised_outside(match.group(1), question):
                    return Extraction(match.group(1), kind, rank)
        return None
    found = _best_sentence(stems, top, own) if stems else None
    if kind == "where":
        ordered = ([(found.rank, found.sentence)] if found else []) + list(enumerate(top, 1))
        for rank, text in ordered:
            for match in _PLACE.finditer(text):
                if _capitalised_outside(match.group(1), question):
                    return Extraction(match.group(1), kind, rank)
        return None
    if kind == "count":
        ordered = ([(found.rank, found.sentence)] if found else []) + list(enumerate(top, 1))
        for rank, text in ordered:
            match = _COUNT.search(text)
            if match:
                return Extraction(match.group(1), kind, rank)
        return None
    if found is None or found.shared < min_shared:
        return None
    if style == "after":
        span = _after_last_shared(found.words, stems)
    else:
        kept = content_words(found.sentence, stems, people)
        if len(kept) < MIN_CONTENT_WORDS and found.following:
            kept += content_words(found.following, stems, people)
        span = " ".join(kept[:MAX_SPAN_WORDS])
    return Extraction(span, kind, found.rank) if span else None


_COPIED_PREFIX = re.compile(r"^\s*(\[[^\]]{3,40}\]\s*)?([A-Z][\w .'-]{0,30}:\s+)?")
"""An evidence line's "[date] speaker: " (agent/compose.py), which a small model copies in front of its answer."""
_DONT_KNOW = re.compile(r"\b(?:don'?t know|do not know|not (?:been )?mentioned|no information|cannot be answered|unknown)\b", re.I)
"""What the benchmarks read as "does not know" (benchmarks/answers.py): such an answer is left whole."""


TRIMS = ("off", "question", "evidence")
_CALENDAR = re.compile(
    r"\d[\d.,:/-]*|january|february|march|april|may|june|july|august|september|october|november|december|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday",
    re.I,
)
"""Kept when grounding: the prompt dates every record ("[7 May 2023]"), so a date need not be in a record's words."""


def trim_answer(answer: str, question: str, evidence: Sequence[str] | None = None) -> str:
    """A short answer without the words that only restate the question: "Caroline researched adoption agencies"
    -> "adoption agencies" for "What did Caroline research?". Only the first line counts (a short answer is one
    line); commas are kept, so a list stays a list; an answer that says it does not know, or that would lose every
    word, is returned as it was. Time words stay: in a model's answer they may be the answer.

    With `evidence` (the records the model read), words found in none of them are dropped too: a small model
    pads its answer with words of its own ("The Legend of the Phoenix"), and the records are what it was asked to
    answer from. Numbers and calendar words stay. If nothing is grounded, the question-trimmed answer stands."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines or _DONT_KNOW.search(lines[0]):
        return answer
    line = _COPIED_PREFIX.sub("", lines[0], count=1)
    stems = {s for w in _WORD.findall(question) if w.lower() not in _QUESTION_STOP for s in stemmed_tokens(w)}
    parts = [content_words(part, stems, drop_time=False) for part in line.split(",")]
    trimmed = ", ".join(" ".join(part) for part in parts if part)
    if evidence is not None:
        known = {s for text in evidence for w in _WORD.findall(text) for s in stemmed_tokens(w)}
        grounded = [[w for w in part if _CALENDAR.fullmatch(w) or set(stemmed_tokens(w)) & known] for part in parts]
        trimmed = ", ".join(" ".join(part) for part in grounded if part) or trimmed
    return trimmed or answer
