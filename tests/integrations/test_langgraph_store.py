"""MemstreamStore against LangGraph's store contract.

The langgraph package ships no store conformance suite, so the equivalent is here: the same script of
operations runs on LangGraph's own InMemoryStore (the reference) and on MemstreamStore, and every read
must agree; then what only a semantic store does (hybrid search), sync/async parity, and LangMem's
memory tools running on it."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph")

from langgraph.store.base import InvalidNamespaceError  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from memstream.langgraph import MemstreamStore  # noqa: E402
from memstream.langgraph.store import conversation_for, namespace_of  # noqa: E402

SCRIPT = [
    (("alice", "memories"), "colour", {"text": "Favourite colour is teal", "kind": "pref", "weight": 3}),
    (("alice", "memories"), "food", {"text": "Loves pad thai", "kind": "pref", "weight": 5}),
    (("alice", "memories"), "job", {"text": "Works as a nurse", "kind": "fact", "weight": 1}),
    (("alice", "projects", "garden"), "plan", {"text": "Plant tomatoes in May", "kind": "plan", "nested": {"a": 1}}),
    (("alice", "projects", "kitchen"), "plan", {"text": "Paint the cupboards", "kind": "plan", "nested": {"a": 2}}),
    (("bob", "memories"), "colour", {"text": "Favourite colour is orange", "kind": "pref", "weight": 4}),
    (("bob", "work/notes"), "k/1", {"text": "a key and a label with slashes", "kind": "odd"}),
    (("alice", "memories"), "food", {"text": "Loves ramen now", "kind": "pref", "weight": 6}),  # overwrite
    (("alice", "memories"), "job", None),  # delete
]


def apply(store, script=SCRIPT) -> None:
    for namespace, key, value in script:
        if value is None:
            store.delete(namespace, key)
        else:
            store.put(namespace, key, value)


@pytest.fixture
def store(memory) -> MemstreamStore:
    return MemstreamStore(memory)


def plain(items) -> list[tuple]:
    return sorted((item.namespace, item.key, repr(sorted(item.value.items()))) for item in items)


def test_reads_agree_with_langgraphs_in_memory_store(store):
    reference = InMemoryStore()
    apply(reference)
    apply(store)
    # Namespaces first: the reference creates an empty namespace when a missing one is read.
    listings = [
        {},
        {"prefix": ("alice",)},
        {"prefix": ("alice", "projects")},
        {"suffix": ("memories",)},
        {"prefix": ("*", "memories")},
        {"max_depth": 1},
        {"prefix": ("alice",), "max_depth": 2},
        {"limit": 2, "offset": 1},
    ]
    for listing in listings:
        assert store.list_namespaces(**listing) == reference.list_namespaces(**listing), listing
    for namespace, key, _ in SCRIPT + [(("alice", "memories"), "missing", None), (("carol", "x"), "colour", None)]:
        ours, theirs = store.get(namespace, key), reference.get(namespace, key)
        assert (ours is None) == (theirs is None), (namespace, key)
        if theirs is not None:
            assert (ours.namespace, ours.key, ours.value) == (theirs.namespace, theirs.key, theirs.value)
    searches = [
        {"namespace_prefix": ("alice",)},
        {"namespace_prefix": ("alice", "memories")},
        {"namespace_prefix": ("alice", "projects")},
        {"namespace_prefix": ()},
        {"namespace_prefix": ("alice",), "filter": {"kind": "pref"}},
        {"namespace_prefix": ("alice", "memories"), "filter": {"kind": "pref", "weight": {"$gte": 4}}},
        {"namespace_prefix": ("bob", "memories"), "filter": {"weight": {"$lt": 5}}},  # (the reference fails on items without the field)
        {"namespace_prefix": (), "filter": {"kind": {"$ne": "pref"}}},
        {"namespace_prefix": ("alice",), "filter": {"nested": {"a": 2}}},
        {"namespace_prefix": ("nobody",)},
    ]
    for search in searches:
        prefix, options = search["namespace_prefix"], {k: v for k, v in search.items() if k != "namespace_prefix"}
        assert plain(store.search(prefix, **options, limit=50)) == plain(reference.search(prefix, **options, limit=50)), search


def test_pagination_overwrite_times_and_validation(store):
    for i in range(5):
        store.put(("alice", "notes"), f"n{i}", {"text": f"note {i}"})
    page = store.search(("alice", "notes"), limit=2, offset=1)
    assert [item.key for item in page] == ["n3", "n2"]  # most recently written first
    first = store.get(("alice", "notes"), "n0")
    store.put(("alice", "notes"), "n0", {"text": "note zero, edited"})
    edited = store.get(("alice", "notes"), "n0")
    assert edited.value == {"text": "note zero, edited"}
    assert edited.created_at == first.created_at and edited.updated_at > first.updated_at
    assert len(store.search(("alice", "notes"), limit=100)) == 5
    with pytest.raises(InvalidNamespaceError):
        store.put(("alice", "has.period"), "k", {"text": "x"})
    with pytest.raises(InvalidNamespaceError):
        store.put((), "k", {"text": "x"})
    with pytest.raises(ValueError, match="operator"):
        store.search(("alice",), filter={"text": {"$regex": "x"}})


def test_namespaces_are_memstream_users_and_conversations(store, memory):
    apply(store)
    assert set(memory.users()) == {"alice", "bob"}
    conversations = {c.conversation_id for c in memory.conversations("alice")}
    assert conversation_for(("alice", "memories")) in conversations
    assert namespace_of(conversation_for(("bob", "work/notes"))) == ("bob", "work/notes")
    # Bob's memstream partition holds none of Alice's items, through memstream's own search too.
    bob_texts = [hit.turn.text for hit in memory.search("bob", "teal pad thai ramen nurse", k=20, wait_s=10).hits]  # found densely
    assert bob_texts and not any(word in " ".join(bob_texts) for word in ("teal", "ramen", "nurse"))
    fixed = MemstreamStore(memory, user="carol")
    fixed.put(("anything", "here"), "k", {"text": "carol's note"})
    assert memory.list_turns("carol")[0].conversation_id == conversation_for(("anything", "here"))
    assert fixed.list_namespaces() == [("anything", "here")]


def test_semantic_search_goes_through_the_hybrid_retriever(store):
    apply(store)
    store.put(("alice", "memories"), "pet", {"text": "Has a grey cat called Miso"})
    store.put(("alice", "memories"), "secret", {"text": "cat cat cat"}, index=False)
    store.put(("alice", "memories"), "titled", {"title": "Holiday", "body": "Went to Crete in June"}, index=["body"])
    hits = store.search(("alice",), query="grey cat Miso", limit=3)
    assert hits[0].key == "pet" and hits[0].score is not None and hits[0].score > 0
    assert "secret" not in [h.key for h in store.search(("alice",), query="cat", limit=10)]  # index=False: get only
    assert store.get(("alice", "memories"), "secret").value == {"text": "cat cat cat"}
    assert store.search(("alice",), query="Crete June", limit=1)[0].key == "titled"
    indexed = [t.text for t in store.memory.list_turns("alice") if t.metadata["langgraph"]["key"] == "titled"]
    assert indexed == ["Went to Crete in June"]  # only the index fields' text is searched
    # A replaced value is not found by its old words; a filter narrows a query.
    old_words = store.search(("alice",), query="pad thai", limit=20)
    assert [h.value for h in old_words if h.key == "food"] in ([], [{"text": "Loves ramen now", "kind": "pref", "weight": 6}])
    prefs = store.search(("alice",), query="colour teal", filter={"kind": "pref"}, limit=10)
    assert prefs and all(h.value["kind"] == "pref" for h in prefs)
    assert {h.namespace[0] for h in store.search((), query="favourite colour", limit=10)} == {"alice", "bob"}


async def test_async_methods_share_the_sync_core(store):
    await store.aput(("alice", "memories"), "colour", {"text": "Favourite colour is teal"})
    assert (await store.aget(("alice", "memories"), "colour")).value == store.get(("alice", "memories"), "colour").value
    assert [i.key for i in await store.asearch(("alice",), query="teal")] == [i.key for i in store.search(("alice",), query="teal")]
    assert await store.alist_namespaces(prefix=("alice",)) == store.list_namespaces(prefix=("alice",))
    await store.adelete(("alice", "memories"), "colour")
    assert store.get(("alice", "memories"), "colour") is None


def test_langmem_memory_tools_run_on_the_store(store):
    langmem = pytest.importorskip("langmem")
    from langgraph.func import entrypoint

    manage = langmem.create_manage_memory_tool(namespace=("{langgraph_user_id}", "memories"))
    search = langmem.create_search_memory_tool(namespace=("{langgraph_user_id}", "memories"))

    @entrypoint(store=store)
    def workflow(request: dict) -> object:
        if request["op"] == "manage":
            return manage.invoke(request["args"])
        return search.invoke(request["args"])

    alice = {"configurable": {"langgraph_user_id": "alice"}}
    bob = {"configurable": {"langgraph_user_id": "bob"}}
    created = workflow.invoke({"op": "manage", "args": {"content": "Alice is allergic to peanuts", "action": "create"}}, alice)
    assert "created memory" in created
    memory_id = created.split()[-1]
    found = workflow.invoke({"op": "search", "args": {"query": "peanuts allergy"}}, alice)
    assert "allergic to peanuts" in found and memory_id in found
    assert "peanuts" not in workflow.invoke({"op": "search", "args": {"query": "peanuts allergy"}}, bob)
    workflow.invoke({"op": "manage", "args": {"content": "Alice is allergic to shellfish", "id": memory_id, "action": "update"}}, alice)
    assert store.get(("alice", "memories"), memory_id).value["content"] == "Alice is allergic to shellfish"
    workflow.invoke({"op": "manage", "args": {"id": memory_id, "action": "delete"}}, alice)
    assert store.get(("alice", "memories"), memory_id) is None


def test_a_langgraph_agent_stores_and_recalls_a_fact_through_the_store(store, memory):
    """A two-node graph (remember, then answer) with memstream's scripted chat model: the fact told in one
    thread is recalled from the store in another."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.runtime import Runtime

    from memstream.backends.scripted import ScriptedBackend
    from memstream.langchain.chat_model import MemstreamChatModel

    def respond(messages):
        context = next((m["content"] for m in messages if m["role"] == "system"), "")
        facts = [line[2:] for line in context.splitlines() if line.startswith("- ")]
        return f"From memory: {facts[0]}" if facts else "I don't know yet."

    backend = ScriptedBackend(respond=respond)
    model = MemstreamChatModel(backend=backend)

    def remember(state: MessagesState, runtime: Runtime) -> dict:
        text = state["messages"][-1].content
        if text.lower().startswith("remember:"):
            runtime.store.put((runtime.context["user"], "memories"), f"m{len(text)}", {"text": text.split(":", 1)[1].strip()})
        return {}

    def answer(state: MessagesState, runtime: Runtime) -> dict:
        question = state["messages"][-1].content
        recalled = runtime.store.search((runtime.context["user"], "memories"), query=question, limit=1)
        context = "Memories:\n" + "\n".join(f"- {item.value['text']}" for item in recalled)
        return {"messages": [model.invoke([SystemMessage(context), *state["messages"]])]}

    builder = StateGraph(MessagesState, context_schema=dict)
    builder.add_node("remember", remember)
    builder.add_node("answer", answer)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "answer")
    builder.add_edge("answer", END)
    graph = builder.compile(store=store)

    graph.invoke({"messages": [HumanMessage("Remember: my bike is a red Bianchi")]}, context={"user": "dana"})
    reply = graph.invoke({"messages": [HumanMessage("Which bike do I ride?")]}, context={"user": "dana"})
    assert reply["messages"][-1].content == "From memory: my bike is a red Bianchi"
    assert "red Bianchi" in backend.calls[-1][0]["content"]  # the model saw the recalled fact
    assert [t.text for t in memory.list_turns("dana")] == ["my bike is a red Bianchi"]
    other = graph.invoke({"messages": [HumanMessage("Which bike do I ride?")]}, context={"user": "erin"})
    assert other["messages"][-1].content == "I don't know yet."


@pytest.mark.slow
def test_the_real_stack_finds_items_by_meaning(settings):
    """Real MiniLM embedder and SQLite: a query sharing no word with the item still finds it."""
    from memstream.memory import open_memory

    with open_memory(settings) as memory:
        store = MemstreamStore(memory)
        store.put(("alice", "memories"), "pet", {"text": "Adopted a grey cat called Miso last spring"})
        store.put(("alice", "memories"), "car", {"text": "Drives a blue hatchback to work"})
        store.put(("alice", "memories"), "food", {"text": "Favourite dish is pad thai"})
        hits = store.search(("alice", "memories"), query="what animal lives with her?", limit=1)
        assert [h.key for h in hits] == ["pet"]
        store.put(("alice", "memories"), "pet", {"text": "Her kitten Miso turned two"})
        assert memory.flush(120)  # the search waits SEARCH_WAIT_S for vectors; a loaded CI machine may need longer
        assert [h.value["text"] for h in store.search(("alice",), query="what animal lives with her?", limit=1)] == ["Her kitten Miso turned two"]
