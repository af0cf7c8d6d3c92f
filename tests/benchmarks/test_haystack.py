"""Haystack builder: evidence sessions survive, distractors fill to the chosen length, dates are ordered."""

from __future__ import annotations

import json

import pytest

from memstream.benchmarks.haystack import build_haystacks, session_tokens
from memstream.benchmarks.questions import longmemeval_items
from memstream.memory.importers import parse_longmemeval_time
from tests.conftest import LOCOMO_DEV, LONGMEMEVAL_SAMPLE


@pytest.fixture(scope="module")
def sources():
    return json.loads(LONGMEMEVAL_SAMPLE.read_text()), json.loads(LOCOMO_DEV.read_text())[:1]


def test_evidence_is_buried_at_the_chosen_length(sources):
    questions, locomo = sources
    items = build_haystacks(questions, locomo, history_tokens=20000, seed=1)
    for original, item in zip(questions, items):
        ids = item["haystack_session_ids"]
        assert set(original["answer_session_ids"]) <= set(ids)
        assert any(i.startswith("distractor_") for i in ids)
        assert sum(session_tokens(s) for s in item["haystack_sessions"]) >= 20000
        dates = [parse_longmemeval_time(d) for d in item["haystack_dates"]]
        assert dates == sorted(dates)
        asked = parse_longmemeval_time(item["question_date"])
        assert all(d < asked for d, i in zip(dates, ids) if i.startswith("distractor_"))
        # the evidence turns keep their has_answer marks, so turn-level recall still works
        evidence = item["haystack_sessions"][ids.index(original["answer_session_ids"][0])]
        assert any(turn.get("has_answer") for turn in evidence)
    # the result loads as LongMemEval, and is the same for the same seed
    loaded = longmemeval_items(items)
    assert not loaded.problems and len(loaded.questions) == 2
    assert build_haystacks(questions, locomo, 20000, seed=1) == items


def test_no_distractors_is_an_error(sources):
    questions, _ = sources
    with pytest.raises(ValueError, match="no distractor sessions"):
        build_haystacks(questions, [], history_tokens=100)
