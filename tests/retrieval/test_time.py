"""Time windows: parsed from questions (several formats, relative expressions) and applied to search."""

from __future__ import annotations

from datetime import datetime

import pytest

from memstream.retrieval.timeparse import TimeWindow, extract_time_window, parse_datetime

NOW = datetime(2023, 6, 15, 12, 0)  # a Thursday


@pytest.mark.parametrize(
    "question, start, end",
    [
        ("What did I do last May?", datetime(2023, 5, 1), datetime(2023, 6, 1)),
        ("what did we talk about in March?", datetime(2023, 3, 1), datetime(2023, 4, 1)),
        ("trips in 2022", datetime(2022, 1, 1), datetime(2023, 1, 1)),
        ("what did I eat yesterday", datetime(2023, 6, 14), datetime(2023, 6, 15)),
        ("what happened two weeks ago", datetime(2023, 5, 28), datetime(2023, 6, 5)),
        ("what did I do 3 days ago", datetime(2023, 6, 11), datetime(2023, 6, 14)),
        ("plans for last weekend?", datetime(2023, 6, 9), datetime(2023, 6, 12)),
        ("anything last year?", datetime(2022, 1, 1), datetime(2023, 1, 1)),
        ("what did we do on 8 May 2023", datetime(2023, 5, 8), datetime(2023, 5, 9)),
        ("the meeting on 2023-05-08", datetime(2023, 5, 8), datetime(2023, 5, 9)),
        ("the meeting on 05/08/2023", datetime(2023, 5, 8), datetime(2023, 5, 9)),
        ("May 8th, 2023 dinner", datetime(2023, 5, 8), datetime(2023, 5, 9)),
        ("since March, what changed?", datetime(2023, 3, 1), datetime(2023, 6, 16, 12, 0)),
    ],
)
def test_windows(question, start, end):
    window = extract_time_window(question, NOW)
    assert window is not None, question
    assert (window.start, window.end) == (start, end)
    assert window.expression.lower() in question.lower()


@pytest.mark.parametrize("question", ["What did I do before my trip?", "Where does Clara live?", "", "may I ask something"])
def test_no_window_when_none_can_be_resolved(question):
    assert extract_time_window(question, NOW) is None


def test_last_month_name_is_strictly_past():
    # "last June" asked in June means the previous year's June.
    assert extract_time_window("what did I do last June", NOW).start == datetime(2022, 6, 1)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2023-05-08T14:00", datetime(2023, 5, 8, 14, 0)),
        ("2023-05-08", datetime(2023, 5, 8)),
        ("8 May 2023", datetime(2023, 5, 8)),
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("2023-05-08T14:00+02:00", datetime(2023, 5, 8, 12, 0)),
    ],
)
def test_parse_datetime(text, expected):
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["", "not a date at all", "32/13/2023"])
def test_parse_datetime_rejects(text):
    assert parse_datetime(text) is None


def test_filter_mode_includes_and_excludes_the_right_turns(shared):
    retriever = shared[1]
    now = datetime(2023, 6, 20)
    # "last May" -> only the 20 May session (marathon); filler said in March and June is excluded.
    result = retriever.search("ann", "what happened last May?", k=50, now=now, time_mode="filter")
    assert result.time_window is not None and result.time_window.start == datetime(2023, 5, 1)
    assert result.hits and all(h.event_time.month == 5 for h in result.hits)
    assert any("marathon" in h.turn.text for h in result.hits)
    # An explicit window overrides the question's words.
    window = TimeWindow(datetime(2023, 3, 1), datetime(2023, 4, 1), "March")
    hits = retriever.search("ann", "kitten shelter marathon Lisbon", k=50, time_window=window, time_mode="filter").hits
    assert hits and {h.event_time.month for h in hits} == {3}


def test_boost_mode_ranks_in_window_turns_first(shared):
    retriever = shared[1]
    # Filler lines repeat in every session; the window decides which copy wins.
    query_march = "What did we watch about deep sea creatures in March 2023?"
    query_june = "What did we watch about deep sea creatures in June 2023?"
    top_march = retriever.search("ann", query_march, k=1, now=datetime(2023, 7, 1)).hits[0]
    top_june = retriever.search("ann", query_june, k=1, now=datetime(2023, 7, 1)).hits[0]
    assert "deep sea" in top_march.turn.text and top_march.event_time.month == 3
    assert "deep sea" in top_june.turn.text and top_june.event_time.month == 6
