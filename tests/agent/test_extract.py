"""The extractive answer step: spans read from the evidence by question kind; None when nothing fits."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.agent.controller import TurnOptions
from memstream.agent.extract import extract_answer, question_kind
from memstream.backends.scripted import ScriptedBackend
from memstream.benchmarks.scoring import token_f1
from memstream.memory.model import NewSession, NewTurn

PEOPLE = ["Caroline", "Melanie"]


def test_question_kinds():
    assert question_kind("What did Caroline research?") == "what"
    assert question_kind("What is the name of Melanie's dog?") == "name"
    assert question_kind("Where did Melanie go camping?") == "where"
    assert question_kind("How many children does Melanie have?") == "count"
    assert question_kind("Why did she move?") is None
    assert question_kind("What did she buy? Select the correct answer: (a) Not mentioned (b) a car.") is None


def test_spans_by_kind():
    what = extract_answer("What did Caroline research?", ["That's great, Melanie! I've been researching adoption agencies for my family."], PEOPLE)
    assert what.text == "adoption agencies for my family" and what.kind == "what"
    # The 135M model's reply on this question in the dev run rambled; the span scores where a ramble does not.
    assert token_f1(what.text, "Adoption agencies") > token_f1("Caroline is a researcher who did research on many things", "Adoption agencies")
    assert extract_answer("Where did Melanie go camping?", ["We went camping at the Grand Canyon last week."], PEOPLE).text == "the Grand Canyon"
    assert extract_answer("How many children does Melanie have?", ["I have three kids and they love camping."], PEOPLE).text == "three kids"
    assert extract_answer("What is the name of my cat?", ["My cat is called Mochi and I adopted her last May."]).text == "Mochi"


def test_nothing_fits_nothing_is_returned():
    assert extract_answer("What is the name of my cat?", ["I like cats a lot."]) is None
    assert extract_answer("Where did she go?", ["she went somewhere nice"]) is None
    assert extract_answer("What did Caroline research?", ["Nice weather today."], PEOPLE) is None
    assert extract_answer("What did Caroline research?", ["I've been researching adoption agencies."], PEOPLE, kinds=("name",)) is None
    assert extract_answer("What did Caroline research?", [], PEOPLE) is None


def test_the_agent_answers_from_the_evidence_and_the_model_only_when_extraction_has_nothing(make_agent):
    t0 = datetime(2023, 5, 8, 14)
    backend = ScriptedBackend(["the model's words"])
    agent = make_agent(backend, agent={"attribution_check": False, "extract_kinds": ["name", "where", "count", "what"]})
    agent.memory.ingest("u", [NewSession("c", [
        NewTurn("user", "I've been researching adoption agencies for my family.", "Caroline", t0),
        NewTurn("user", "Wow, that's huge. I painted a lake sunrise last week.", "Melanie", t0 + timedelta(minutes=1)),
    ], t0)])
    assert agent.memory.flush(60)
    options = TurnOptions(remember=False, short_answer=True)
    reply = agent.chat("What did Caroline research?", user="u", at=t0 + timedelta(days=1), options=options)
    assert reply.text == "adoption agencies for my family" and backend.calls == []
    assert any("extracted a what answer" in note for note in reply.notes)
    why = agent.chat("Why did Caroline research adoption agencies?", user="u", at=t0 + timedelta(days=1), options=options)
    assert why.text == "the model's words" and len(backend.calls) == 1
