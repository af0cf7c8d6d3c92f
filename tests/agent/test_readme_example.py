"""The README's own example: "I moved to Lisbon last spring." then, in the same conversation, "Where do I live
now?" must answer from that turn, not abstain. Recent turns are evidence when nothing older matches."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from memstream.agent import prompts
from memstream.agent.controller import MemoryAgent
from memstream.backends.scripted import ScriptedBackend
from memstream.config import load_settings
from memstream.memory import open_memory
from tests.small_embedder import HashingEmbedder

MOVED = "I moved to Lisbon last spring."
WHERE = "Where do I live now?"


def memory_block(messages) -> str:
    system = messages[0]["content"]
    return system.split(prompts.MEMORY_OPEN, 1)[1].split(prompts.MEMORY_CLOSE, 1)[0] if prompts.MEMORY_OPEN in system else ""


def test_same_conversation_answers_from_the_recent_turn(tmp_path):
    # The model writes (no span reading), so the test sees the evidence it was offered.
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), **{"agent.enrich": False, "agent.chat_extract_kinds": []})
    backend = ScriptedBackend(replies=["Nice, Lisbon is lovely.", "You live in Lisbon."])
    with open_memory(settings, HashingEmbedder()) as memory:
        agent = MemoryAgent(memory, backend, settings)
        agent.chat(MOVED, user="alice", at=datetime(2024, 6, 1, 10, 0))
        reply = agent.chat(WHERE, user="alice", at=datetime(2024, 6, 1, 10, 1))
        assert not reply.abstained and reply.text == "You live in Lisbon."
        offered = backend.calls[-1]
        assert MOVED in memory_block(offered)  # the evidence the model was given
        assert [m.turn.text for m in reply.memories] == [MOVED]  # reported as the memory used
        assert all(m.turn.role != "assistant" for m in reply.memories)  # its own earlier reply is not evidence


def test_a_search_that_finds_nothing_waits_for_the_users_pending_keys(tmp_path):
    # The background indexer is held until 0.3 s into the second turn: the first turn's vector is still pending
    # when the question is searched, and nothing matches it by keyword.
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), **{"agent.enrich": False, "agent.chat_extract_kinds": []})
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()
    backend = ScriptedBackend(replies=["Nice, Lisbon is lovely.", "You live in Lisbon."])
    with open_memory(settings, embedder) as memory:
        agent = MemoryAgent(memory, backend, settings)
        agent.chat(MOVED, user="alice", at=datetime(2024, 6, 1, 10, 0))
        assert memory.stats("alice")["index"]["pending_keys"] > 0
        threading.Timer(0.3, embedder.gate.set).start()
        reply = agent.chat(WHERE, user="alice", at=datetime(2024, 6, 1, 10, 1))
        assert not reply.abstained and [m.turn.text for m in reply.memories] == [MOVED]


def test_the_wait_for_pending_keys_is_bounded(tmp_path):
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path),
                             **{"agent.enrich": False, "agent.chat_extract_kinds": [], "agent.pending_wait_s": 0.2})
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()  # never set before the question: the keys stay pending
    backend = ScriptedBackend(replies=["Nice, Lisbon is lovely.", "You live in Lisbon."])
    try:
        with open_memory(settings, embedder) as memory:
            agent = MemoryAgent(memory, backend, settings)
            agent.chat(MOVED, user="alice", at=datetime(2024, 6, 1, 10, 0))
            started = time.monotonic()
            reply = agent.chat(WHERE, user="alice", at=datetime(2024, 6, 1, 10, 1))
            assert reply.abstained and time.monotonic() - started < 5  # not remembered yet, said promptly
            embedder.gate.set()
    finally:
        embedder.gate.set()


def test_a_first_message_does_not_wait_for_its_own_keys(tmp_path):
    # The only pending keys are the question's own turn's: there is nothing to wait for.
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path),
                             **{"agent.enrich": False, "agent.chat_extract_kinds": [], "agent.pending_wait_s": 30})
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()
    try:
        with open_memory(settings, embedder) as memory:
            searches = []
            search = memory.search
            memory.search = lambda *args, **kwargs: searches.append(kwargs.get("wait_s", 0)) or search(*args, **kwargs)
            agent = MemoryAgent(memory, ScriptedBackend(replies=["Hello!"]), settings)
            reply = agent.chat(WHERE, user="newcomer", at=datetime(2024, 6, 1, 10, 1))
            assert memory.pending_turns("newcomer") >= {reply.user_turn_id}
            assert reply.abstained and searches == [0]  # one search, no wait
            embedder.gate.set()
    finally:
        embedder.gate.set()


def test_another_conversation_still_finds_it_in_the_archive(tmp_path):
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), **{"agent.enrich": False, "agent.chat_extract_kinds": []})
    backend = ScriptedBackend(replies=["Noted.", "Lisbon."])
    with open_memory(settings, HashingEmbedder()) as memory:
        agent = MemoryAgent(memory, backend, settings)
        agent.chat(MOVED, user="alice", conversation="monday", at=datetime(2024, 6, 1, 10, 0))
        reply = agent.chat(WHERE, user="alice", conversation="friday", at=datetime(2024, 6, 7, 9, 0))
        assert not reply.abstained and MOVED in memory_block(backend.calls[-1])


def test_the_place_is_read_from_the_users_own_words(tmp_path):
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), **{"agent.enrich": False})
    backend = ScriptedBackend(replies=["Nice, Lisbon is lovely.", "Somewhere sunny."])
    with open_memory(settings, HashingEmbedder()) as memory:
        agent = MemoryAgent(memory, backend, settings)
        agent.chat(MOVED, user="alice", at=datetime(2024, 6, 1, 10, 0))
        reply = agent.chat(WHERE, user="alice", at=datetime(2024, 6, 1, 10, 1))
        assert reply.text == "Lisbon." and len(backend.calls) == 1  # the second answer made no model call
        both = agent.chat("Where do I live now, and when did I move?", user="alice", at=datetime(2024, 6, 1, 10, 2))
        assert both.text == "Somewhere sunny."  # a compound question is the model's to answer


@pytest.mark.slow
def test_readme_example_with_the_local_model(tmp_path):
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), **{"agent.enrich": False})
    with MemoryAgent.from_settings(settings) as agent:
        agent.chat(MOVED, user="alice", at=datetime(2024, 6, 1, 10, 0))
        reply = agent.chat(WHERE, user="alice", at=datetime(2024, 6, 1, 10, 1))
        assert not reply.abstained
        assert [m.turn.text for m in reply.memories] == [MOVED]
        assert "lisbon" in reply.text.lower(), reply.text
