"""The memory-side LangChain adapters on a real Memory (SQLite, the real indexes and embedder):
the langchain-tests standard suites for the retriever, vector store and embeddings, plus
isolation, provenance and history round trips the suites do not cover."""

from __future__ import annotations

from datetime import datetime

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests, VectorStoreIntegrationTests

from memstream.config import load_settings
from memstream.langchain import (
    MemstreamChatMessageHistory,
    MemstreamEmbeddings,
    MemstreamRetriever,
    MemstreamVectorStore,
)
from memstream.memory import Memory, open_memory
from memstream.memory.model import NewSession, NewTurn

ALICE_TURNS = [
    ("user", "My cat Miso only eats salmon-flavoured food.", datetime(2023, 5, 2, 9, 0)),
    ("assistant", "Noted: Miso likes salmon.", datetime(2023, 5, 2, 9, 1)),
    ("user", "I started a new job at the observatory in June.", datetime(2023, 6, 10, 18, 0)),
    ("assistant", "Congratulations on the observatory job!", datetime(2023, 6, 10, 18, 1)),
    ("user", "My sister Ines lives in Lisbon.", datetime(2023, 7, 1, 12, 0)),
    ("assistant", "Lisbon is lovely in summer.", datetime(2023, 7, 1, 12, 1)),
]


@pytest.fixture(scope="module")
def alice_memory(tmp_path_factory, embedders) -> Memory:
    """Alice's memory (one conversation, two sessions) and Bob's, which Alice must never see."""
    directory = tmp_path_factory.mktemp("alice")
    settings = load_settings(db_url=f"sqlite:///{directory / 'memstream.db'}", home=str(directory))
    with open_memory(settings, embedders=embedders) as memory:
        turns = [NewTurn(role, text, role, when) for role, text, when in ALICE_TURNS]
        memory.ingest("alice", [NewSession("chat", turns[:4], started_at=turns[0].event_time), NewSession("chat", turns[4:], started_at=turns[4].event_time)])
        memory.ingest("bob", [NewSession("chat", [NewTurn("user", "My cat eats salmon too, and my password is hunter2.")])])
        assert memory.flush(60)
        yield memory


# -- standard suites --------------------------------------------------------------------------


class TestMemstreamRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _memory(self, alice_memory):
        self._params = {"memory": alice_memory, "user_id": "alice"}

    @property
    def retriever_constructor(self) -> type[MemstreamRetriever]:
        return MemstreamRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return self._params

    @property
    def retriever_query_example(self) -> str:
        return "What does my cat eat?"


class TestMemstreamVectorStoreStandard(VectorStoreIntegrationTests):
    """The suite's fake embeddings are not used: the store embeds with memstream's real embedder."""

    @pytest.fixture
    def vectorstore(self, make_memory):
        return MemstreamVectorStore(make_memory(), user_id="carol")


class TestMemstreamEmbeddingsStandard(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _embedder(self, embedders):
        self._params = {"embedder": embedders.get("all-MiniLM-L6-v2")}

    @property
    def embeddings_class(self) -> type[MemstreamEmbeddings]:
        return MemstreamEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return self._params


# -- retriever ------------------------------------------------------------------------------


def test_retriever_documents_carry_provenance_and_scores(alice_memory):
    docs = MemstreamRetriever(memory=alice_memory, user_id="alice", k=2).invoke("Which city does my sister live in?")
    assert docs[0].page_content == "My sister Ines lives in Lisbon."
    meta = docs[0].metadata
    assert meta["user_id"] == "alice" and meta["conversation_id"] == "chat"
    assert meta["event_time"] == "2023-07-01T12:00:00"
    assert meta["turn_id"] == int(docs[0].id)
    assert meta["fused_score"] > 0 and meta["dense_score"] > 0.3 and meta["lexical_score"] > 0


def test_retriever_never_returns_another_users_memory(alice_memory):
    for user, forbidden in (("alice", "hunter2"), ("bob", "Miso")):
        docs = MemstreamRetriever(memory=alice_memory, user_id=user, k=10).invoke("cat salmon password")
        assert docs and all(d.metadata["user_id"] == user for d in docs)
        assert not any(forbidden in d.page_content for d in docs)


def test_retriever_time_window_resolves_against_now(alice_memory):
    retriever = MemstreamRetriever(memory=alice_memory, user_id="alice", k=1, mode="memstream")
    docs = retriever.invoke("what did I tell you last June?", now=datetime(2024, 1, 15))
    assert docs[0].page_content == "I started a new job at the observatory in June."


def test_retriever_for_a_user_with_no_memory_returns_nothing(alice_memory):
    assert MemstreamRetriever(memory=alice_memory, user_id="nobody").invoke("anything") == []


# -- vector store ---------------------------------------------------------------------------


def test_vectorstore_is_per_user_and_shares_the_users_memory(make_memory):
    memory = make_memory()
    ada = MemstreamVectorStore(memory, user_id="ada")
    bea = MemstreamVectorStore(memory, user_id="bea")
    ada.add_texts(["The boiler was serviced in March 2024."], metadatas=[{"room": "cellar"}], ids=["boiler"])
    bea.add_texts(["Bea's bike has a flat tyre."], ids=["bike"])
    assert bea.get_by_ids(["boiler"]) == [] and bea.similarity_search("boiler service", k=5)[0].id == "bike"
    doc, score = ada.similarity_search_with_score("when was the boiler serviced?", k=1)[0]
    assert (doc.id, doc.metadata) == ("boiler", {"room": "cellar"}) and 0.3 < score <= 1.0
    relevance = ada.similarity_search_with_relevance_scores("when was the boiler serviced?", k=1)[0][1]
    assert relevance == pytest.approx((score + 1) / 2)
    # The documents are memories: memstream's own search (as the agent uses it) finds them too.
    hits = memory.search("ada", "boiler", k=1).hits
    assert hits[0].turn.source_id == "boiler"


def test_vectorstore_rejects_foreign_embeddings_and_bad_options(make_memory):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    memory = make_memory()
    with pytest.raises(ValueError, match="memstream's embedder"):
        MemstreamVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=4), memory=memory, user_id="ada")
    store = MemstreamVectorStore.from_texts(["x marks the spot"], memory=memory, user_id="ada")
    with pytest.raises(ValueError, match="unknown search option"):
        store.similarity_search("x", k=1, filter={"a": 1})
    with pytest.raises(ValueError, match="counts must match"):
        store.add_texts(["a", "b"], ids=["1"])


# -- chat history ---------------------------------------------------------------------------


def test_history_round_trips_messages_and_clears_one_conversation(make_memory):
    memory = make_memory()
    history = MemstreamChatMessageHistory(memory, "ada", "trip")
    other = MemstreamChatMessageHistory(memory, "ada", "work")
    messages = [
        SystemMessage("You plan trips."),
        HumanMessage("We fly to Reykjavik on 3 March.", name="ada"),
        AIMessage("Pack for snow.", tool_calls=[{"name": "weather", "args": {"city": "Reykjavik"}, "id": "c1"}]),
    ]
    history.add_messages(messages)
    other.add_user_message("The quarterly report is due Friday.")
    assert history.messages == messages
    assert [t.role for t in memory.list_turns("ada", "trip")] == ["system", "user", "assistant"]
    # Written through the memory: found by keyword at once, and by meaning once embedded.
    assert memory.search("ada", "Reykjavik flight", k=1, mode="bm25").hits[0].turn.text == "We fly to Reykjavik on 3 March."
    assert memory.search("ada", "Reykjavik flight", k=1, mode="hybrid", wait_s=30).hits[0].turn.text == "We fly to Reykjavik on 3 March."
    assert MemstreamChatMessageHistory(memory, "bea", "trip").messages == []
    history.clear()
    assert history.messages == []
    assert [m.content for m in other.messages] == ["The quarterly report is due Friday."]
    assert all("Reykjavik" not in h.turn.text for h in memory.search("ada", "Reykjavik flight", k=5).hits)


def test_history_rejects_non_messages(make_memory):
    memory = make_memory(index=False)
    history = MemstreamChatMessageHistory(memory, "ada", "c")
    with pytest.raises(TypeError, match="not a LangChain BaseMessage"):
        history.add_messages(["hello"])  # type: ignore[list-item]
    assert memory.count_turns() == 0
    with pytest.raises(ValueError, match="user id"):
        MemstreamChatMessageHistory(memory, "", "c")


def test_vectorstore_documents_survive_a_reopen(make_memory):
    first = make_memory()
    MemstreamVectorStore(first, user_id="ada").add_documents([Document("Keys are under the mat.", metadata={"n": 1})], ids=["keys"])
    first.close()
    reopened = MemstreamVectorStore(make_memory(first.settings), user_id="ada")
    assert reopened.get_by_ids(["keys"]) == [Document("Keys are under the mat.", metadata={"n": 1}, id="keys")]
    assert reopened.similarity_search("where are the keys?", k=1)[0].id == "keys"


def test_retriever_rejects_bad_construction(alice_memory):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="user id must be a non-empty string"):
        MemstreamRetriever(memory=alice_memory, user_id=" ")
    with pytest.raises(ValidationError, match="unknown search mode 'fuzzy'"):
        MemstreamRetriever(memory=alice_memory, user_id="alice", mode="fuzzy")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        MemstreamRetriever(memory=alice_memory, user_id="alice", k=0)
