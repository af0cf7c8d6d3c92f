"""Isolation matrix: user A never sees user B's turns, facts, summaries or index hits, through any
public read path (the Memory's reads and search, its index, agent, CLI, export, LangChain adapters),
also after B is forgotten and after the index is rebuilt from the database.

Each user's memory holds a marker word the other never says; a path leaks if A's results
contain B's marker (or B's row ids)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from memstream.cli import app
from memstream.config import load_settings
from memstream.memory import Memory
from memstream.memory.model import NewSession, NewTurn

T0 = datetime(2023, 5, 8, 14, 0)
MARK = {"alice": "zebrafinch", "bob": "walrusoboe"}
QUERIES = ["zebrafinch", "walrusoboe", "what pet do I have?", "where does my sister live?", "what did I do last May?"]


def seed(memory: Memory, user: str) -> None:
    mark = MARK[user]
    sessions = [
        NewSession("c1", [
            NewTurn("user", f"I adopted a dog named {mark.title()} last May.", "user", T0),
            NewTurn("assistant", f"{mark.title()} is a lovely name.", "assistant", T0),
            NewTurn("user", f"My sister lives in {mark}ville.", "user", T0),
        ], T0),
        NewSession("c2", [NewTurn("user", f"The {mark} code word is secret.", "user", T0 + timedelta(days=30))], T0 + timedelta(days=30)),
    ]
    results = memory.ingest(user, sessions)
    memory.add_fact(user, "user.pet", f"The user has a dog named {mark.title()}", [results[0][1][0]], valid_from=T0)
    memory.set_session_summary(user, results[0][0], f"Talked about the dog {mark.title()}.")
    assert memory.flush(60)


@pytest.fixture
def world(tmp_path, make_memory):
    """(settings, memory): alice and bob, seeded through one Memory."""
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'iso.db'}", home=str(tmp_path))
    memory = make_memory(settings)
    seed(memory, "alice")
    seed(memory, "bob")
    return settings, memory


def reopened(make_memory, settings) -> Memory:
    """A fresh process's memory: the saved index cache (if any) caught up with the database, vectors in."""
    memory = make_memory(settings)
    assert memory.flush(60)
    return memory


def leaks(text: str, reader: str) -> bool:
    other = "bob" if reader == "alice" else "alice"
    return MARK[other] in text.lower()


def bob_ids(store) -> tuple[list[int], list[int], list[int]]:
    turns = [t.id for t in store.list_turns("bob", limit=1000)]
    sessions = [s.id for s in store.sessions("bob")]
    facts = [f.id for f in store.get_facts("bob")]
    return turns, sessions, facts


def check_store(store, reader: str = "alice") -> None:
    """Every read path of a Memory (or of the store under it)."""
    turns, sessions, facts = bob_ids(store)
    assert not any(leaks(t.text, reader) for t in store.list_turns(reader, limit=1000))
    assert store.get_turns(reader, turns) == [] and all(store.get_turn(reader, i) is None for i in turns)
    assert not any(leaks(t.text, reader) for t in store.recent_turns(reader, "c1", 100))
    assert not any(leaks(f.text, reader) for f in store.get_facts(reader))
    assert not any(leaks(s.summary or "", reader) for s in store.sessions(reader))
    assert all(store.get_session(reader, i) is None for i in sessions)
    assert store.stats(reader)["turns"] == len(store.list_turns(reader, limit=1000))
    assert not any(leaks(json.dumps(r, default=str), reader) for r in store.export_user(reader))


def check_search(memory: Memory, reader: str = "alice") -> None:
    for query in QUERIES:
        for mode in ("memstream", "dense", "bm25"):
            hits = memory.search(reader, query, k=50, now=T0 + timedelta(days=60), mode=mode).hits
            assert all(h.turn.user_id == reader and not leaks(h.turn.text, reader) for h in hits), (query, mode)
        sessions = memory.search_sessions(reader, query, k=10)
        own = {s.id for s in memory.sessions(reader)}
        assert all(s.session_id in own for s in sessions)


def test_store_read_paths(world):
    _, memory = world
    check_store(memory, "alice")
    check_store(memory.store, "alice")  # the rows under it, read directly
    # Writes aimed at B's rows through A's id change nothing.
    turns, sessions, _ = bob_ids(memory)
    assert memory.delete_turn("alice", turns[0]) is False and memory.set_pinned("alice", turns[0]) is False
    memory.set_session_summary("alice", sessions[0], "overwritten")
    assert memory.get_session("bob", sessions[0]).summary == "Talked about the dog Walrusoboe."


def test_retriever_and_index(world, make_memory):
    settings, memory = world
    check_search(memory)
    cache = memory.retriever.cache_dir
    memory.close()  # saves the index cache and lets the next process own it
    # The persisted index, reloaded; then rebuilt from nothing.
    again = reopened(make_memory, settings)
    assert again.retriever.cache_dir == cache
    check_search(again)
    again.close()
    shutil.rmtree(cache)
    check_search(reopened(make_memory, settings))


def test_after_forget_and_rebuild(world, make_memory):
    settings, memory = world
    bob_turns = [t.id for t in memory.list_turns("bob", limit=1000)]
    memory.forget_user("bob")
    assert memory.retriever.indexed_turns("bob") == 0
    check_search(memory)
    check_store(memory)
    # New rows may reuse B's ids (SQLite); A's index must not resurrect B's old keys for them.
    seed(memory, "bob")
    check_search(memory)
    cache = memory.retriever.cache_dir
    memory.close()
    shutil.rmtree(cache)
    rebuilt = reopened(make_memory, settings)
    check_search(rebuilt)
    check_search(rebuilt, "bob")
    assert rebuilt.retriever.indexed_turns("bob") == len(rebuilt.list_turns("bob", limit=1000)) >= len(bob_turns)


def test_agent_prompt_and_memories(world):
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend

    settings, memory = world
    backend = ScriptedBackend(respond=lambda m: "ok")
    agent = MemoryAgent(memory, backend, settings, enrich=False)
    for question in ["What is my dog's name?", "Tell me about walrusoboe and zebrafinch", "Where does my sister live?"]:
        reply = agent.chat(question, user="alice", conversation="c1", at=T0 + timedelta(days=60))
        assert all(h.turn.user_id == "alice" for h in reply.memories)
        prompt = json.dumps(backend.calls[-1])
        assert "walrusoboe" not in prompt.lower().replace("tell me about walrusoboe", "")


def test_cli_list_search_export(world, cli_shares_embedders):
    settings, _ = world
    runner = CliRunner()
    db = ["--db", settings.database_url]
    outputs = [
        runner.invoke(app, ["memory", "list", "--user", "alice", "--json", *db]),
        runner.invoke(app, ["memory", "export", "--user", "alice", *db]),
        runner.invoke(app, ["memory", "stats", "--user", "alice", "--json", *db]),
        *(runner.invoke(app, ["memory", "search", q, "--user", "alice", "-k", "50", "--json", *db]) for q in QUERIES),
    ]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert "zebrafinch" in result.output.lower() or "turns" in result.output
        assert "walrusoboe" not in result.output.lower().replace('"query": "walrusoboe"', "")


def test_langchain_adapters(world):
    from memstream.langchain import MemstreamChatMessageHistory, MemstreamRetriever, MemstreamVectorStore

    _, memory = world
    for query in QUERIES:
        docs = MemstreamRetriever(memory=memory, user_id="alice", k=20).invoke(query)
        assert all(d.metadata["user_id"] == "alice" and not leaks(d.page_content, "alice") for d in docs)
    history = MemstreamChatMessageHistory(memory, "alice", "c1")
    assert history.messages and not any(leaks(m.text, "alice") for m in history.messages)
    bob_vectors = MemstreamVectorStore(memory, "bob")
    [bob_doc] = bob_vectors.add_texts(["walrusoboe vector document"], ids=["shared-id"])
    alice_vectors = MemstreamVectorStore(memory, "alice")
    assert alice_vectors.get_by_ids(["shared-id", bob_doc]) == []
    assert not any(leaks(d.page_content, "alice") for d in alice_vectors.similarity_search("walrusoboe vector document", k=10))
    alice_vectors.delete(["shared-id"])  # A deleting B's id removes nothing of B's
    assert bob_vectors.get_by_ids(["shared-id"])
