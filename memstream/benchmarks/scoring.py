"""Answer scores: LoCoMo token F1 (ported from the LoCoMo authors' task_eval/evaluation.py), BLEU-1.

The port keeps the original's quirks on purpose, so numbers compare with published ones:
- normalisation deletes commas first, lowercases, strips punctuation, removes the words
  a / an / the / and, and collapses whitespace;
- tokens are Porter-stemmed and overlap is counted (a multiset), not set-based;
- category 1 (multi-hop): prediction and gold are split on ',' and each gold part takes the best
  F1 over the predicted parts; the score is the mean over gold parts;
- categories 2, 3, 4: plain F1; for category 3 only the gold text before the first ';' counts;
- category 5 (adversarial): 1 if the prediction says 'no information available' or
  'not mentioned' (any case), else 0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache

from nltk.stem import PorterStemmer

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ABSTENTION_MARKERS = ("no information available", "not mentioned")

_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = set(string.punctuation)
_STEMMER = PorterStemmer()


def normalize_answer(text: str) -> str:
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


def stemmed_tokens(text: str) -> list[str]:
    return [_stem(word) for word in normalize_answer(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """Counted token-overlap F1 after normalisation and stemming (the original `f1_score`)."""
    predicted = stemmed_tokens(prediction)
    expected = stemmed_tokens(gold)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(expected)
    return 2 * precision * recall / (precision + recall)


def multi_hop_f1(prediction: str, gold: str) -> float:
    """Mean over comma-separated gold parts of the best F1 against any predicted part (the original `f1`)."""
    predictions = [part.strip() for part in prediction.split(",")]
    golds = [part.strip() for part in gold.split(",")]
    return sum(max(token_f1(p, g) for p in predictions) for g in golds) / len(golds)


def is_abstention(prediction: str) -> bool:
    lowered = prediction.lower()
    return any(marker in lowered for marker in ABSTENTION_MARKERS)


def locomo_f1(category: int, prediction: str, gold: str) -> float:
    """The LoCoMo QA score for one answer, by category. Raises ValueError on an unknown category."""
    if category == 5:
        return 1.0 if is_abstention(prediction) else 0.0
    if category == 1:
        return multi_hop_f1(prediction, gold)
    if category == 3:
        return token_f1(prediction, gold.split(";")[0].strip())
    if category in (2, 4):
        return token_f1(prediction, gold)
    raise ValueError(f"unknown LoCoMo category {category!r} (expected 1-5)")


def bleu1(prediction: str, gold: str) -> float:
    """Sentence BLEU-1: clipped unigram precision times the brevity penalty, on normalised tokens."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(gold).split()
    if not predicted or not expected:
        return 0.0
    clipped = sum((Counter(predicted) & Counter(expected)).values())
    precision = clipped / len(predicted)
    brevity = 1.0 if len(predicted) > len(expected) else math.exp(1 - len(expected) / len(predicted))
    return precision * brevity
