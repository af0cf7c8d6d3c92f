"""Event time: relative dates resolved at write time into facts linked to the turn, used by search and "when" answers."""

from __future__ import annotations

from datetime import datetime, timedelta

from memstream.agent.compose import date_answer
from memstream.agent.enrich import EnrichJob, enrich_turns
from memstream.agent.event_time import event_facts, find_event_times, window_label
from memstream.backends.scripted import ScriptedBackend
from memstream.memory.model import NewSession, NewTurn, Turn
from memstream.retrieval.timeparse import TimeWindow

SAID = datetime(2026, 12, 1, 15, 0)


def turn(text: str, at: datetime = SAID, speaker: str = "user", role: str = "user", turn_id: int = 7) -> Turn:
    return Turn(turn_id, "u", "c", 1, role, speaker, text, at, at)


def test_relative_dates_resolve_against_when_they_were_said():
    [may] = find_event_times("My cat is called Mochi and I adopted her last May.", SAID)
    assert (may.start, may.end, may.label) == (datetime(2026, 5, 1), datetime(2026, 6, 1), "May 2026")
    # Said in March, "last May" is the year before: the turn's own time decides, not the clock.
    [earlier] = find_event_times("I adopted her last May.", datetime(2026, 3, 2))
    assert earlier.label == "May 2025"
    [yesterday] = find_event_times("I went to a support group yesterday.", SAID)
    assert yesterday.label == "30 November 2026"
    [ago] = find_event_times("Two weeks ago I ran a charity race.", SAID)
    assert ago.start <= datetime(2026, 11, 17) < ago.end and ago.label == "the week of 17 November 2026"
    [explicit] = find_event_times("We met on June 12, 2020 at ArtSpace.", SAID)
    assert explicit.label == "12 June 2020"


def test_windows_around_now_or_ahead_are_not_events():
    assert find_event_times("I may go there this year.", SAID) == []
    assert find_event_times("Today I feel great.", SAID) == []
    assert find_event_times("The bias audit is in December 2027.", SAID) == []


def test_labels():
    assert window_label(datetime(2023, 5, 7), datetime(2023, 5, 8)) == "7 May 2023"
    assert window_label(datetime(2022, 1, 1), datetime(2023, 1, 1)) == "2022"
    assert window_label(datetime(2023, 2, 1), datetime(2023, 3, 1)) == "February 2023"


def test_event_facts_are_linked_to_their_turn_and_never_close_each_other():
    facts = event_facts(turn("I adopted Mochi last May. Yesterday I bought her a bed.", speaker="Caroline"))
    assert [subject for subject, _, _ in facts] == ["caroline.event.t7.0", "caroline.event.t7.1"]
    assert facts[0][1] == "Caroline: I adopted Mochi last May (May 2026)."
    assert facts[1][2]["event_label"] == "30 November 2026" and facts[1][2]["kind"] == "event_time"


def test_when_answer_uses_the_event_time_where_the_old_rule_gave_the_day_said():
    said = turn("I adopted her last May.")
    # The old rule knew no "last May": it answered with the day the turn was said, half a year off.
    assert date_answer(said) == "1 December 2026"
    assert date_answer(said, "May 2026") == "May 2026"
    # Expressions the compose step resolves itself keep their form.
    assert date_answer(turn("I went camping last week."), "the week of 26 November 2026") == "the week before 1 December 2026"


def test_enrichment_stores_the_event_time_and_search_finds_it_by_when_it_happened(make_agent):
    agent = make_agent(ScriptedBackend())
    sessions = [
        NewSession("c", [NewTurn("user", "My cat is called Mochi and I adopted her last May.", "user", SAID)], SAID),
        NewSession("c", [NewTurn("user", "I planted tomatoes in the garden.", "user", datetime(2026, 5, 20))], datetime(2026, 5, 20)),
    ]
    results = agent.memory.ingest("u", sessions)
    for _session, turn_ids in results:
        enrich_turns(agent.memory, EnrichJob("u", "c", turn_ids))
    assert agent.memory.flush(60)
    facts = [f for f in agent.memory.get_facts("u") if f.metadata.get("kind") == "event_time"]
    assert len(facts) == 1 and facts[0].metadata["event_start"] == "2026-05-01T00:00:00"
    window = TimeWindow(datetime(2026, 5, 1), datetime(2026, 6, 1), "in May 2026")
    found = agent.memory.search("u", "what happened with my cat", k=5, now=SAID + timedelta(days=1), time_window=window, mode="memstream", time_mode="filter")
    # Filtered to May: the turn said in December is found because it is about May.
    assert {h.turn.text for h in found.hits} == {"My cat is called Mochi and I adopted her last May.", "I planted tomatoes in the garden."}


def test_mochi_exchange(make_agent):
    """The chat-app report: the user's statement must be the first memory, and its fact must carry May as event time."""
    backend = ScriptedBackend(["Mochi is a Japanese cat named Mochi.", "Mochi; you adopted her in May 2026."])
    agent = make_agent(backend, enrich=True)
    agent.chat("My cat is called Mochi and I adopted her last May.", user="me", conversation="first", at=SAID)
    agent.enricher.drain()
    assert agent.memory.flush(60)
    reply = agent.chat("What is the name of my cat, and when did I adopt her?", user="me", conversation="second", at=SAID + timedelta(days=2))
    first = reply.memories[0].turn
    assert (first.role, first.text) == ("user", "My cat is called Mochi and I adopted her last May.")
    assert any(m.turn.role == "assistant" for m in reply.memories)  # the reply stays searchable...
    prompt = reply.messages[0]["content"]
    assert "assistant (earlier reply): Mochi is a Japanese cat" in prompt  # ...but marked as such
    assert "May 2026" in prompt  # the stored event time reaches the model
    [fact] = [f for f in agent.memory.get_facts("me") if f.metadata.get("kind") == "event_time" and f.source_turn_ids == [first.id]]
    assert fact.metadata["event_start"] == "2026-05-01T00:00:00" and fact.metadata["event_label"] == "May 2026"
