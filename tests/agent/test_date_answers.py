"""Short answers to "when" questions come from the best memory's date, resolved by the framework."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.agent.compose import date_answer
from memstream.agent.controller import TurnOptions
from memstream.agent.planner import WHEN_QUESTION
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.model import NewSession, NewTurn, Turn

SAID = datetime(2023, 6, 9, 14, 0)


def turn(text: str) -> Turn:
    return Turn(id=1, user_id="u", conversation_id="c", session_id=1, position=0, role="user", speaker="Ann", text=text,
                event_time=SAID, ingested_at=SAID, pinned=False, metadata={})


def test_date_answer_resolves_the_first_relative_expression():
    assert date_answer(turn("I went to the support group yesterday and loved it")) == "8 June 2023"
    assert date_answer(turn("Last week I gave a talk at a school")) == "the week before 9 June 2023"
    assert date_answer(turn("I painted that lake sunrise last year")) == "2022"
    assert date_answer(turn("I signed up for a pottery class")) == "9 June 2023"  # nothing relative: the day it was said


def test_when_questions_are_recognised():
    assert WHEN_QUESTION.search("When did Caroline go to the support group?")
    assert WHEN_QUESTION.search("which year did we move?")
    assert not WHEN_QUESTION.search("Where did Caroline go yesterday?")


def test_short_answer_to_when_is_the_memory_date_without_a_model_call(make_agent):
    backend = ScriptedBackend(["sometime in 2021"])
    agent = make_agent(backend)
    sessions = [
        NewSession("history", [NewTurn("user", "I ran the charity 5K yesterday in 27 minutes.", "user", SAID)], SAID),
        NewSession("history", [NewTurn("user", "My sister Emma got married in Lisbon.", "user", SAID + timedelta(days=40))],
                   SAID + timedelta(days=40)),
    ]
    agent.memory.ingest("alice", sessions)
    assert agent.memory.flush(60)
    at = SAID + timedelta(days=100)
    reply = agent.chat("When did I run the charity 5K?", user="alice", at=at, options=TurnOptions(short_answer=True, remember=False))
    assert reply.text == "8 June 2023" and not reply.abstained
    assert backend.calls == []
    # A full answer (chat) still goes to the model, with the resolved date in its evidence.
    reply = agent.chat("When did I run the charity 5K?", user="alice", at=at, options=TurnOptions(remember=False))
    assert reply.text == "sometime in 2021"
    assert "yesterday [8 June 2023]" in backend.calls[-1][0]["content"]
