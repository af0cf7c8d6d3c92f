"""LoCoMo F1 port: hand-worked cases for normalisation, stemming, counted overlap and each category rule."""

from __future__ import annotations

import pytest

from memstream.benchmarks.answers import clean_prediction
from memstream.benchmarks.report import ndcg, recall_all, recall_any
from memstream.benchmarks.scoring import bleu1, locomo_f1, normalize_answer, token_f1


def test_normalize_answer_follows_locomo():
    # commas removed first, lowercase, punctuation stripped, a/an/the/and removed, whitespace collapsed
    assert normalize_answer("The Cat, and a Dog!") == "cat dog"
    assert normalize_answer("  Paris,   France. ") == "paris france"
    assert normalize_answer("Andrew and Anna") == "andrew anna"  # 'and' only as a whole word


CASES = [
    # (category, prediction, gold, expected)  -- each expected value worked out by hand
    (4, "Paris", "Paris", 1.0),
    (4, "She went to Paris", "Paris", 2 * (1 / 4) * 1 / (1 / 4 + 1)),  # she/went/to/pari vs pari: P=1/4 R=1 -> 0.4
    (4, "running dogs", "the dog runs", 1.0),  # stems: run dog / dog run
    (4, "cat cat", "cat", 2 * 0.5 * 1 / 1.5),  # counted overlap: 1 of 2 predicted tokens
    (4, "blue", "red", 0.0),
    (2, "7 May 2023", "7 May 2023", 1.0),
    (2, "May 2023", "7 May 2023", 2 * 1 * (2 / 3) / (1 + 2 / 3)),  # 0.8
    # category 3: gold cut at the first ';'
    (3, "likely yes", "Likely yes; because she loves it", 1.0),
    # category 1: gold parts each take the best predicted part, averaged
    (1, "Paris, Rome", "Rome, Paris", 1.0),
    (1, "Paris", "Paris, Rome", 0.5),
    (1, "pottery, painting classes", "pottery, painting, camping", (1 + 2 * 0.5 * 1 / 1.5 + 0) / 3),
    # category 5: abstention recognised or not
    (5, "Not mentioned in the conversation", "Not mentioned in the conversation", 1.0),
    (5, "There is no information available.", "anything", 1.0),
    (5, "NOT MENTIONED", "", 1.0),
    (5, "self-care is important", "Not mentioned in the conversation", 0.0),
]


@pytest.mark.parametrize("category,prediction,gold,expected", CASES)
def test_locomo_f1_cases(category, prediction, gold, expected):
    assert locomo_f1(category, prediction, gold) == pytest.approx(expected)


def test_unknown_category_is_an_error():
    with pytest.raises(ValueError, match="unknown LoCoMo category 7"):
        locomo_f1(7, "x", "y")


def test_token_f1_empty_prediction_scores_zero():
    assert token_f1("", "Paris") == 0.0


def test_bleu1_brevity_penalty():
    assert bleu1("Paris", "Paris") == 1.0
    # 1 of 1 predicted unigram matches, but the prediction is 1 word against 2: exp(1 - 2/1)
    assert bleu1("Paris", "Paris France") == pytest.approx(0.36787944)
    assert bleu1("Paris France Rome Oslo", "Paris") == pytest.approx(0.25)


def test_retrieval_metrics_by_hand():
    ranked = ["s3", "s1", "s9", "s2"]
    assert recall_any(ranked, {"s1", "s2"}, 2) == 1.0
    assert recall_all(ranked, {"s1", "s2"}, 2) == 0.0
    assert recall_all(ranked, {"s1", "s2"}, 4) == 1.0
    # hits at ranks 2 and 4: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3))
    assert ndcg(ranked, {"s1", "s2"}, 4) == pytest.approx((0.63092975 + 0.43067656) / 1.63092975)


def test_clean_prediction_is_one_rule_for_every_system():
    assert clean_prediction("[7 May 2023] Caroline: She went to the support group.\nMore rambling") == "She went to the support group."
    assert clean_prediction("(b)", {"a": "self-care", "b": "Not mentioned in the conversation"}) == "Not mentioned in the conversation"
    assert clean_prediction("I don't know: nothing in my memory mentions that.") == "Not mentioned in the conversation"
    assert len(clean_prediction("word " * 100).split()) == 40
