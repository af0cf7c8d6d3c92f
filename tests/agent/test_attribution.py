"""Questions that name one of the people in a memory: names left out of the search, then checked against who spoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from memstream.agent import prompts
from memstream.agent.attribution import check_attribution, named_people, strip_names
from memstream.agent.controller import TurnOptions
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.model import NewSession, NewTurn

T0 = datetime(2023, 5, 8, 14, 0)


@dataclass
class _Turn:
    speaker: str | None


@dataclass
class _Hit:
    turn: _Turn
    fused_score: float


def hits(*pairs):
    return [_Hit(_Turn(speaker), score) for speaker, score in pairs]


def test_named_people_are_whole_words_and_never_roles():
    speakers = {"Caroline", "Mel", "user", "assistant"}
    assert named_people("What did Caroline's friend say?", speakers) == ["Caroline"]
    assert named_people("What did Melanie say?", speakers) == []  # "Mel" is not a word of it
    assert named_people("what did the user say?", speakers) == []
    assert named_people("Did Mel and Caroline meet?", speakers) == ["Caroline", "Mel"]


def test_strip_names_keeps_the_question_and_never_empties_it():
    assert strip_names("What did Caroline's sister paint?", ["Caroline"]) == "What did sister paint?"
    assert strip_names("Caroline", ["Caroline"]) == "Caroline"


def test_check_attribution_needs_someone_else_clearly_ahead():
    assert check_attribution("Ann", hits(("Bob", 0.05), ("Ann", 0.03)), 0.005).speaker == "Bob"
    assert check_attribution("Ann", hits(("Bob", 0.05), ("Ann", 0.048)), 0.005) is None  # too close to call
    assert check_attribution("Ann", hits(("Ann", 0.05), ("Bob", 0.01)), 0.005) is None
    # Nothing from Ann at all: measured against the last hit of the list.
    assert check_attribution("Ann", hits(("Bob", 0.05), ("Bob", 0.02)), 0.005).margin == 0.05 - 0.02
    assert check_attribution("Ann", hits(("assistant", 0.05), ("Ann", 0.01)), 0.005) is None
    assert check_attribution("Ann", [], 0.005) is None


def seed_two_people(agent, user="researcher"):
    turns = [
        NewTurn("user", "Thanks, Caroline! The charity race was thought-provoking; I realized self-care is really important.", "Melanie", T0),
        NewTurn("user", "That's great, Melanie! I've been researching adoption agencies for my family.", "Caroline", T0 + timedelta(minutes=1)),
        NewTurn("user", "Wow Caroline, that's huge. I painted a lake sunrise last week.", "Melanie", T0 + timedelta(minutes=2)),
        NewTurn("user", "Love it Melanie! I am going to a pride parade next month.", "Caroline", T0 + timedelta(minutes=3)),
    ]
    agent.memory.ingest(user, [NewSession("conv", turns, T0)])
    assert agent.memory.flush(60)


def ask(make_agent, question: str, **settings):
    backend = ScriptedBackend(["self-care is important"])
    agent = make_agent(backend, **settings)
    seed_two_people(agent)
    reply = agent.chat(question, user="researcher", at=T0 + timedelta(days=1), options=TurnOptions(remember=False))
    return reply, backend


def test_a_question_about_the_wrong_person_gets_no_borrowed_answer(make_agent):
    reply, backend = ask(make_agent, "What did Caroline realize after her charity race?")
    assert reply.abstained
    assert reply.text == prompts.MISATTRIBUTED_REPLY.format(asked_about="Caroline", speaker="Melanie")
    assert "Caroline" not in reply.plan.query  # searched without the name
    assert backend.calls == []


def test_a_question_about_the_right_person_is_answered(make_agent):
    reply, _ = ask(make_agent, "What did Melanie realize after her charity race?")
    assert not reply.abstained and reply.text == "self-care is important"
    assert reply.memories[0].turn.speaker == "Melanie"


def test_attribution_check_can_be_switched_off(make_agent):
    reply, _ = ask(make_agent, "What did Caroline realize after her charity race?", agent={"attribution_margin": None})
    assert not reply.abstained
