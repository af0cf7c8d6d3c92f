"""Questions that name one of the people in a memory: names left out of the search, then checked against who spoke."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.agent import prompts
from memstream.agent.attribution import (
    AttributionParams,
    EvidenceHit,
    check_attribution_margin,
    decide_attribution,
    named_people,
    query_terms,
    strip_names,
    tells_own_story,
)
from memstream.agent.controller import TurnOptions
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.model import NewSession, NewTurn

T0 = datetime(2023, 5, 8, 14, 0)


def hits(*rows):
    """(speaker, fused score[, names in the text]) -> EvidenceHits, best first."""
    return [EvidenceHit(row[0], row[1], tuple(row[2]) if len(row) > 2 else ()) for row in rows]


PARAMS = AttributionParams(own_rank=3, own_ratio=0.8, mention_counts=True)


def test_named_people_are_whole_words_and_never_roles():
    speakers = {"Caroline", "Mel", "user", "assistant"}
    assert named_people("What did Caroline's friend say?", speakers) == ["Caroline"]
    assert named_people("What did Melanie say?", speakers) == []  # "Mel" is not a word of it
    assert named_people("what did the user say?", speakers) == []
    assert named_people("Did Mel and Caroline meet?", speakers) == ["Caroline", "Mel"]


def test_strip_names_keeps_the_question_and_never_empties_it():
    assert strip_names("What did Caroline's sister paint?", ["Caroline"]) == "What did sister paint?"
    assert strip_names("Caroline", ["Caroline"]) == "Caroline"


def test_the_old_margin_rule_and_the_decision_on_the_same_evidence():
    # Ann's own turn is second, well behind Bob's: the margin rule said "not mentioned"; Ann's turn is right there.
    evidence = hits(("Bob", 0.05), ("Ann", 0.03), ("Bob", 0.02))
    assert check_attribution_margin("Ann", evidence, 0.005) is not None
    assert decide_attribution("Ann", evidence, PARAMS) is None
    # Nothing from Ann in the top three, but Bob's best turn is about her ("Ann told me she..."): answer.
    about_her = hits(("Bob", 0.05, ["Ann"]), ("Bob", 0.04), ("Cy", 0.03), ("Ann", 0.01))
    assert check_attribution_margin("Ann", about_her, 0.005) is not None
    assert decide_attribution("Ann", about_her, PARAMS) is None
    assert decide_attribution("Ann", about_her, AttributionParams(3, 0.8, mention_counts=False)) is not None
    # Ann's own best is close in score though lower in rank: answer.
    close = hits(("Bob", 0.050), ("Bob", 0.049), ("Bob", 0.048), ("Ann", 0.045))
    assert check_attribution_margin("Ann", close, 0.004) is not None
    assert decide_attribution("Ann", close, PARAMS) is None
    # The shipped parameters (chosen by leave-one-conversation-out) answer these too.
    for evidence in (hits(("Bob", 0.05), ("Ann", 0.045)), close):
        assert check_attribution_margin("Ann", evidence, 0.004) is not None
        assert decide_attribution("Ann", evidence, AttributionParams()) is None


def test_the_decision_abstains_only_when_every_signal_agrees():
    clear = hits(("Bob", 0.05), ("Bob", 0.04), ("Bob", 0.03), ("Ann", 0.01))
    wrong = decide_attribution("Ann", clear, PARAMS)
    assert wrong is not None and (wrong.speaker, wrong.asked_about) == ("Bob", "Ann") and abs(wrong.margin - 0.04) < 1e-9
    # No Ann at all: still abstains, margin against the last hit.
    assert decide_attribution("Ann", hits(("Bob", 0.05), ("Bob", 0.02)), PARAMS).margin == 0.05 - 0.02
    assert decide_attribution("Ann", hits(("Ann", 0.05), ("Bob", 0.01)), PARAMS) is None
    assert decide_attribution("Ann", hits(("assistant", 0.05), ("Bob", 0.04)), PARAMS) is None  # a role is nobody
    assert decide_attribution("Ann", [], PARAMS) is None
    # A shallower look at the top abstains where a deeper one sees Ann.
    ann_fourth = hits(("Bob", 0.05), ("Bob", 0.045), ("Bob", 0.04), ("Ann", 0.02))
    assert decide_attribution("Ann", ann_fourth, AttributionParams(3, 0.8, False)) is not None
    assert decide_attribution("Ann", ann_fourth, AttributionParams(5, 0.8, False)) is None


def test_the_story_signal_reads_who_tells_the_story():
    assert tells_own_story("I ran a charity race and realized self-care matters.")
    assert not tells_own_story("That's great! Did you enjoy your race?")  # said to the listener
    assert not tells_own_story("Caroline ran the race.")  # not first person
    terms = query_terms("What did realize after charity race?")
    melanie = EvidenceHit.from_text("Melanie", 0.05, "Thanks! The charity race made me realize self-care is important.", ["Caroline"], terms)
    assert melanie.own_story and melanie.overlap == 3  # realiz, chariti, race
    reply = EvidenceHit.from_text("Caroline", 0.045, "That's great, Melanie! So proud of you.", ["Caroline"], terms)
    assert not reply.own_story and reply.overlap == 0


def test_the_story_signal_catches_a_borrowed_answer_the_score_ratio_lets_through():
    # Caroline asked about Melanie's race: Caroline's reply ranks second on the round key they share and scores 0.92
    # of Melanie's story, so the score ratio answers (with Melanie's words); the story signal does not.
    terms = query_terms("What did realize after charity race?")
    evidence = [
        EvidenceHit.from_text("Melanie", 0.050, "The charity race made me realize self-care is really important.", ["Caroline"], terms),
        EvidenceHit.from_text("Caroline", 0.046, "That's great, Melanie! So proud of you.", ["Caroline"], terms),
    ]
    without = AttributionParams(own_rank=1, own_ratio=0.8, mention_counts=False, story_ratio=None)
    assert decide_attribution("Caroline", evidence, without) is None
    wrong = decide_attribution("Caroline", evidence, AttributionParams(own_rank=1, own_ratio=0.8, story_ratio=1.01))
    assert wrong is not None and wrong.speaker == "Melanie"
    # The old margin rule (0.005) missed it too: the margin is 0.004.
    assert check_attribution_margin("Caroline", evidence, 0.005) is None


def test_the_story_signal_answers_when_the_person_own_turn_fits_the_question_as_well():
    terms = query_terms("What did paint last week?")
    # Bob's first-person turn is best, but Ann's own turn has as many of the question's words: her own story.
    evidence = [
        EvidenceHit.from_text("Bob", 0.050, "I saw the painting you showed me last week, I loved it.", ["Ann"], terms),
        EvidenceHit.from_text("Ann", 0.045, "Last week I painted a lake at sunrise.", ["Ann"], terms),
    ]
    assert not evidence[0].own_story  # "you": said to Ann
    params = AttributionParams(own_rank=1, own_ratio=0.8, story_ratio=2.0)
    assert decide_attribution("Ann", evidence, params) is None
    told = [
        EvidenceHit.from_text("Bob", 0.050, "Last week I painted my garage and a fence.", ["Ann"], terms),
        EvidenceHit.from_text("Ann", 0.045, "Last week I painted a lake at sunrise.", ["Ann"], terms),
    ]
    # Both tell their own story; Ann's fits the question's words as well as Bob's: the ratio alone decides (0.9 >= 0.8).
    assert told[0].overlap == told[1].overlap
    assert decide_attribution("Ann", told, params) is None


def seed_two_people(agent, user="researcher"):
    said = [
        ("Melanie", "The charity race was thought-provoking; I realized self-care is really important."),
        ("Caroline", "That's great, Melanie! I've been researching adoption agencies for my family."),
        ("Melanie", "After the charity race I realized how much I love running with friends."),
        ("Caroline", "Love it Melanie! I am going to a pride parade next month."),
        ("Melanie", "Running that race for charity made me realize that support matters."),
        ("Caroline", "My new painting of a sunflower field is almost done."),
    ]
    turns = [NewTurn("user", text, speaker, T0 + timedelta(minutes=i)) for i, (speaker, text) in enumerate(said)]
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
    reply, _ = ask(make_agent, "What did Caroline realize after her charity race?", agent={"attribution_check": False})
    assert not reply.abstained
