"""Isolation matrix: user A never sees user B's turns, facts, summaries or index hits, through any
public read path (store, retriever and its index, agent, CLI, export, LangChain adapters), also
after B is forgotten and after the index is rebuilt from the database.

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
from memstream.memory.model import NewSession, NewTurn
from memstream.memory.store import MemoryStore
from memstream.retrieval.retriever import Retriever

T0 = datetime(2023, 5, 8, 14, 0)
MARK = {"alice": "zebrafinch", "bob": "walrusoboe"}
QUERIES = ["zebrafinch", "walrusoboe", "what pet do I have?", "where does my sister live?", "what did I do last May?"]


def seed(store: MemoryStore, user: str) -> None:
    mark = MARK[user]
    sessions = [
        NewSession("c1", [
            NewTurn("user", f"I adopted a dog named {mark.title()} last May.", "user", T0),
            NewTurn("assistant", f"{mark.title()} is a lovely name.", "assistant", T0),
            NewTurn("user", f"My sister lives in {mark}ville.", "user", T0),
        ], T0),
        NewSession("c2", [NewTurn("user", f"The {mark} code word is secret.", "user", T0 + timedelta(days=30))], T0 + timedelta(days=30)),
    ]
    results = store.ingest_sessions(user, sessions)
    store.add_fact(user, "user.pet", f"The user has a dog named {mark.title()}", [results[0][1][0]], valid_from=T0)
    store.set_session_summary(user, results[0][0], f"Talked about the dog {mark.title()}.")


@pytest.fixture
def world(tmp_path, embedders):
    url = f"sqlite:///{tmp_path / 'iso.db'}"
    settings = load_settings(db_url=url, home=str(tmp_path))
    store = MemoryStore(url)
    seed(store, "alice")
    seed(store, "bob")
    retriever = Retriever.from_settings(settings, store, embedders=embedders)
    yield settings, store, retriever
    store.close()


def leaks(text: str, reader: str) -> bool:
    other = "bob" if reader == "alice" else "alice"
    return MARK[other] in text.lower()


def bob_ids(store: MemoryStore) -> tuple[list[int], list[int], list[int]]:
    turns = [t.id for t in store.list_turns("bob", limit=1000)]
    sessions = [s.id for s in store.sessions("bob")]
    facts = [f.id for f in store.get_facts("bob")]
    return turns, sessions, facts


def check_store(store: MemoryStore, reader: str = "alice") -> None:
    turns, sessions, facts = bob_ids(store)
    assert not any(leaks(t.text, reader) for t in store.list_turns(reader, limit=1000))
    assert store.get_turns(reader, turns) == [] and all(store.get_turn(reader, i) is None for i in turns)
    assert not any(leaks(t.text, reader) for t in store.recent_turns(reader, "c1", 100))
    assert not any(leaks(f.text, reader) for f in store.get_facts(reader))
    assert not any(leaks(s.summary or "", reader) for s in store.sessions(reader))
    assert all(store.get_session(reader, i) is None for i in sessions)
    assert store.stats(reader)["turns"] == len(store.list_turns(reader, limit=1000))
    assert not any(leaks(json.dumps(r, default=str), reader) for r in store.export_user(reader))


def check_retriever(retriever: Retriever, reader: str = "alice") -> None:
    for query in QUERIES:
        for mode in ("memstream", "dense", "bm25"):
            hits = retriever.search(reader, query, k=50, now=T0 + timedelta(days=60), mode=mode).hits
            assert all(h.turn.user_id == reader and not leaks(h.turn.text, reader) for h in hits), (query, mode)
        sessions = retriever.search_sessions(reader, query, k=10)
        own = {s.id for s in retriever.store.sessions(reader)}
        assert all(s.session_id in own for s in sessions)


def test_store_read_paths(world):
    _, store, _ = world
    check_store(store, "alice")
    check_store(store, "alice")
    # Writes aimed at B's rows through A's id change nothing.
    turns, sessions, _ = bob_ids(store)
    assert store.delete_turn("alice", turns[0]) is False and store.set_pinned("alice", turns[0]) is False
    store.set_session_summary("alice", sessions[0], "overwritten")
    assert store.get_session("bob", sessions[0]).summary == "Talked about the dog Walrusoboe."


def test_retriever_and_index(world, embedders):
    settings, store, retriever = world
    check_retriever(retriever)
    # The persisted index, reloaded; then rebuilt from nothing.
    check_retriever(Retriever.from_settings(settings, store, embedders=embedders))
    shutil.rmtree(retriever.cache_dir)
    check_retriever(Retriever.from_settings(settings, store, embedders=embedders))


def test_after_forget_and_rebuild(world, embedders):
    settings, store, retriever = world
    bob_turns = [t.id for t in store.list_turns("bob", limit=1000)]
    store.forget_user("bob")
    retriever.sync()
    assert retriever.indexed_turns("bob") == 0
    check_retriever(retriever)
    check_store(store)
    # New rows may reuse B's ids (SQLite); A's index must not resurrect B's old keys for them.
    seed(store, "bob")
    retriever.sync()
    check_retriever(retriever)
    shutil.rmtree(retriever.cache_dir)
    rebuilt = Retriever.from_settings(settings, store, embedders=embedders)
    check_retriever(rebuilt)
    check_retriever(rebuilt, "bob")
    assert rebuilt.indexed_turns("bob") == len(store.list_turns("bob", limit=1000)) >= len(bob_turns)


def test_agent_prompt_and_memories(world):
    from memstream.agent.controller import MemoryAgent
    from memstream.backends.scripted import ScriptedBackend

    settings, store, retriever = world
    backend = ScriptedBackend(respond=lambda m: "ok")
    agent = MemoryAgent(store, retriever, backend, settings, enrich=False)
    for question in ["What is my dog's name?", "Tell me about walrusoboe and zebrafinch", "Where does my sister live?"]:
        reply = agent.chat(question, user="alice", conversation="c1", at=T0 + timedelta(days=60))
        assert all(h.turn.user_id == "alice" for h in reply.memories)
        prompt = json.dumps(backend.calls[-1])
        assert "walrusoboe" not in prompt.lower().replace("tell me about walrusoboe", "")


def test_cli_list_search_export(world, monkeypatch, embedders):
    from memstream.retrieval import retriever as retriever_module

    settings, _, _ = world
    monkeypatch.setattr(retriever_module, "EmbedderCache", lambda: embedders)
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

    _, store, retriever = world
    for query in QUERIES:
        docs = MemstreamRetriever(retriever=retriever, user_id="alice", k=20).invoke(query)
        assert all(d.metadata["user_id"] == "alice" and not leaks(d.page_content, "alice") for d in docs)
    history = MemstreamChatMessageHistory(store, "alice", "c1", retriever=retriever)
    assert history.messages and not any(leaks(m.text, "alice") for m in history.messages)
    bob_vectors = MemstreamVectorStore(retriever, "bob")
    [bob_doc] = bob_vectors.add_texts(["walrusoboe vector document"], ids=["shared-id"])
    alice_vectors = MemstreamVectorStore(retriever, "alice")
    assert alice_vectors.get_by_ids(["shared-id", bob_doc]) == []
    assert not any(leaks(d.page_content, "alice") for d in alice_vectors.similarity_search("walrusoboe vector document", k=10))
    alice_vectors.delete(["shared-id"])  # A deleting B's id removes nothing of B's
    assert bob_vectors.get_by_ids(["shared-id"])
