"""Questions that name one of the people in a memory: names left out of the search, then checked against who spoke."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.agent import prompts
from memstream.agent.attribution import (
    AttributionParams,
    EvidenceHit,
    check_attribution_margin,
    decide_attribution,
    listener_of,
    named_people,
    query_terms,
    sentence_about,
    strip_names,
)
from memstream.agent.controller import TurnOptions
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.model import NewSession, NewTurn

T0 = datetime(2023, 5, 8, 14, 0)
PEOPLE = ["Ann", "Bob"]


def evidence(query: str, *turns: tuple[str, str], asked_about: str = "Ann", people=PEOPLE) -> list[EvidenceHit]:
    """(speaker, text) turns, best first, as the decision reads them for a question about `asked_about`."""
    terms = query_terms(query)
    return [EvidenceHit.from_text(speaker, 0.05 - 0.005 * i, text, asked_about, people, terms) for i, (speaker, text) in enumerate(turns)]


SHIPPED = AttributionParams()


def test_named_people_are_whole_words_and_never_roles():
    speakers = {"Caroline", "Mel", "user", "assistant"}
    assert named_people("What did Caroline's friend say?", speakers) == ["Caroline"]
    assert named_people("What did Melanie say?", speakers) == []  # "Mel" is not a word of it
    assert named_people("what did the user say?", speakers) == []
    assert named_people("Did Mel and Caroline meet?", speakers) == ["Caroline", "Mel"]


def test_strip_names_keeps_the_question_and_never_empties_it():
    assert strip_names("What did Caroline's sister paint?", ["Caroline"]) == "What did sister paint?"
    assert strip_names("Caroline", ["Caroline"]) == "Caroline"


def test_a_sentence_is_about_whoever_its_grammatical_person_points_at():
    assert sentence_about("I ran a charity race and realized self-care matters.") == (1.0, 0.0)
    assert sentence_about("Did you enjoy your race?") == (0.0, 1.0)  # a question put to the listener: theirs
    assert sentence_about("Where is it?") == (0.0, 0.0)  # a question to nobody in particular: nobody's
    assert sentence_about("So proud of you!") == (0.0, 1.0)
    assert sentence_about("I loved the painting you showed me.") == (0.5, 0.5)
    assert sentence_about("The race was long.") == (1.0, 0.0)  # neither: its speaker's
    # "You" said by Ann is someone else; said by Bob, in a two-person conversation or naming her, it is Ann.
    assert listener_of("Ann", "Ann", PEOPLE, "How was your race?") == ""
    assert listener_of("Bob", "Ann", PEOPLE, "How was your race?") == "Ann"
    assert listener_of("Bob", "Ann", ["Ann", "Bob", "Cy"], "How was your race?") is None
    assert listener_of("Bob", "Ann", ["Ann", "Bob", "Cy"], "Ann, how was your race?") == "Ann"


def test_the_words_of_the_question_are_counted_per_sentence_and_per_person():
    query = "What did realize after charity race?"
    story, reply = evidence(query, ("Melanie", "Thanks! The charity race made me realize self-care is important."), ("Caroline", "That's great, Melanie! So proud of you."), asked_about="Caroline", people=["Caroline", "Melanie"])
    assert (story.about_asked, story.about_others) == (0.0, 3.0)  # realiz, chariti, race: Melanie's own
    assert (reply.about_asked, reply.about_others) == (0.0, 0.0)  # no word of the question
    asked = evidence(query, ("Caroline", "How was your charity race? Did it make you realize anything?"), asked_about="Caroline", people=["Caroline", "Melanie"])[0]
    assert (asked.about_asked, asked.about_others) == (0.0, 3.0)  # Caroline asking about Melanie's race
    assert EvidenceHit.from_text("assistant", 0.05, "I ran the charity race.", "Caroline", ["Caroline"], query_terms(query)).about_others == 0.0  # a role: nobody


def test_the_old_margin_rule_and_the_decision_on_the_same_evidence():
    query = "What did paint last week?"
    # Ann's own painting is second, well behind Bob's reply in score: the margin rule said "not mentioned".
    ann_second = evidence(query, ("Bob", "That sounds lovely, what did you paint?"), ("Ann", "Last week I painted a lake at sunrise."))
    ann_second = [EvidenceHit(h.speaker, f, h.about_asked, h.about_others) for h, f in zip(ann_second, (0.05, 0.03))]
    assert check_attribution_margin("Ann", ann_second, 0.005) is not None
    assert decide_attribution("Ann", ann_second, SHIPPED) is None
    # Bob tells his own painting, Ann only asks about it: the evidence is his, whatever the scores.
    bobs = evidence(query, ("Bob", "Last week I painted my garage and then a fence, my first painting in years."), ("Ann", "Nice! What colour did you paint it last week?"))
    wrong = decide_attribution("Ann", bobs, SHIPPED)
    assert wrong is not None and (wrong.speaker, wrong.asked_about, wrong.share) == ("Bob", "Ann", 0.0)


def test_the_decision_answers_when_the_best_memory_is_their_own():
    query = "What did paint last week?"
    bob = [("Bob", f"Last week I painted the {thing}.") for thing in ("garage", "fence", "shed", "gate")]
    told = evidence(query, ("Ann", "I painted a lake."), *bob)
    assert told[0].about_asked == 1.0 and all(h.about_others == 3.0 for h in told[1:])
    assert decide_attribution("Ann", told, SHIPPED) is None  # her own turn is the best memory: answer
    # The same evidence with Bob's turns first: it is his (Ann's share about 0.06 of 6.1 weighed words).
    assert decide_attribution("Ann", evidence(query, *bob, ("Ann", "I painted a lake.")), SHIPPED) is not None


def test_a_little_evidence_about_others_is_not_enough_to_abstain():
    query = "What did paint?"
    one_word = evidence(query, ("Bob", "I painted."))
    assert decide_attribution("Ann", one_word, SHIPPED) is None  # 1 word < min_other
    assert decide_attribution("Ann", one_word, AttributionParams(min_other=1)) is not None
    assert decide_attribution("Ann", [], SHIPPED) is None
    # Ann's share of the evidence past max_share: answer.
    shared = evidence("What did paint at the lake at sunrise?", ("Bob", "I painted the lake at sunrise."), ("Ann", "I painted the lake at sunrise too."))
    assert decide_attribution("Ann", shared, AttributionParams(min_other=1)) is None


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
