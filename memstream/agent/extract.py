"""Reading the evidence: a short answer drawn from the retrieved turns, before any model writes one.

A 135M model given the right record still rambles or copies the wrong line; the answer to "What did Caroline
research?" is usually a few words of the best record ("...researching adoption agencies for my family").
By question kind, this step picks the span that answers it:

- name  ("what is the name of", "called"): the capitalised words after "named" / "called" / "name is";
- where: the place after in / at / to / from;
- count ("how many / much / long / often / old"): the number phrase;
- what / which: the sentence of the top records that shares the most words with the question, from after the
  last shared word (what the sentence says beyond the question), a few words long.

When nothing fits, it returns None and the model writes the answer. Which kinds are on is a setting
(agent.extract_kinds; benchmarks/answer_loco.py chooses it by leave-one-conversation-out on LoCoMo). Questions that offer choices ("(a) ... (b) ...")
are never extracted: the answer is one of the choices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from functools import lru_cache

from nltk.stem import PorterStemmer

KINDS = ("name", "where", "count", "what")
TOP_RECORDS = 3
MAX_SPAN_WORDS = 8

_CHOICES = re.compile(r"\(a\).*\(b\)", re.I | re.S)
_NAME_Q = re.compile(r"\bname(?:s|d)?\b|\bcalled\b", re.I)
_WHERE_Q = re.compile(r"^\s*where\b", re.I)
_COUNT_Q = re.compile(r"^\s*how (many|much|long|often|old)\b", re.I)
_WHAT_Q = re.compile(r"^\s*(what|which)\b", re.I)
_NAME = re.compile(r"\b(?:named|called|name is|name's|name was)\s+((?:[A-Z][\w'-]+)(?:\s+[A-Z][\w'-]+)*)")
_PLACE = re.compile(r"\b(?:in|at|to|from|near|visited|visiting)\s+((?:the\s+)?[A-Z][\w'-]+(?:\s+(?:of\s+)?[A-Z][\w'-]+)*)")
_NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|a few|a couple of|several|once|twice"
_COUNT = re.compile(rf"\b((?:\d+(?:[.,]\d+)?|{_NUMBER_WORDS})(?:\s+(?!and\b|but\b)[a-z]+){{0,2}})", re.I)
_SENTENCE = re.compile(r"[^.!?;\n]+")
_WORD = re.compile(r"[\w'-]+")
_QUESTION_STOP = frozenset(
    "what which who whom whose where when why how is are was were be been do does did has have had a an the of to in "
    "on at for with about from by and or that this these those it its their his her them they he she you your my i me "
    "kind type sort some any many much long often old ever there".split()
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
    if _CHOICES.search(question):
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


def _best_sentence(question_stems: set[str], texts: Sequence[str]) -> tuple[int, str, list[str]] | None:
    """(record rank, sentence, its words) sharing the most question words; earlier records win ties."""
    best = None
    best_score = 0
    for rank, text in enumerate(texts, 1):
        for sentence in _SENTENCE.findall(text):
            words = _WORD.findall(sentence)
            score = len({s for w in words for s in stemmed_tokens(w)} & question_stems)
            if score > best_score:
                best, best_score = (rank, sentence.strip(), words), score
    return best


def _after_last_shared(words: list[str], question_stems: set[str]) -> str:
    last = max((i for i, w in enumerate(words) if set(stemmed_tokens(w)) & question_stems), default=None)
    if last is None:
        return ""
    return " ".join(words[last + 1 : last + 1 + MAX_SPAN_WORDS])


def extract_answer(question: str, texts: Sequence[str], people: Sequence[str] = (), kinds: Sequence[str] = KINDS) -> Extraction | None:
    """The answer span of the question's kind in the top records (`texts`, best first), or None."""
    kind = question_kind(question)
    if kind is None or kind not in kinds:
        return None
    top = list(texts[:TOP_RECORDS])
    stems = _question_stems(question, people)
    if kind == "name":
        for rank, text in enumerate(top, 1):
            for match in _NAME.finditer(text):
                if _capitalised_outside(match.group(1), question):
                    return Extraction(match.group(1), kind, rank)
        return None
    found = _best_sentence(stems, top) if stems else None
    if kind == "where":
        ordered = ([found[:2]] if found else []) + list(enumerate(top, 1))
        for rank, text in ordered:
            for match in _PLACE.finditer(text):
                if _capitalised_outside(match.group(1), question):
                    return Extraction(match.group(1), kind, rank)
        return None
    if kind == "count":
        ordered = ([found[:2]] if found else []) + list(enumerate(top, 1))
        for rank, text in ordered:
            match = _COUNT.search(text)
            if match:
                return Extraction(match.group(1), kind, rank)
        return None
    if found is None:
        return None
    rank, sentence, words = found
    span = _after_last_shared(words, stems)
    return Extraction(span, kind, rank) if len(span.split()) >= 1 else None
