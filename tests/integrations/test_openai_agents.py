"""MemstreamSession against the Agents SDK's Session semantics (its own SQLiteSession is the reference: same
operations, same answers), and an agent run with a scripted model that recalls through the memory-search tool."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

pytest.importorskip("agents")

from agents import Agent, Runner, set_tracing_disabled  # noqa: E402
from agents.items import ModelResponse  # noqa: E402
from agents.memory import SQLiteSession  # noqa: E402
from agents.memory.session_settings import SessionSettings  # noqa: E402
from agents.models.interface import Model  # noqa: E402
from agents.usage import Usage  # noqa: E402
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText  # noqa: E402

from memstream.openai_agents import MemstreamSession, memory_search_tool  # noqa: E402

set_tracing_disabled(True)  # tracing would try to export to the network

ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "Hi, I'm planning a trip to Kyoto."},
    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
     "content": [{"type": "output_text", "text": "Kyoto is lovely in autumn.", "annotations": []}]},
    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Kyoto"}', "id": "fc_1", "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "18C and clear"},
    {"role": "user", "content": "Book the ryokan for 3 nights."},
]


async def run_both(memstream_session, sqlite_session, action: Callable):
    return await action(memstream_session), await action(sqlite_session)


async def test_session_semantics_match_the_sdks_sqlite_session(memory):
    ours, reference = MemstreamSession("trip", memory, user="alice"), SQLiteSession("trip")
    for session in (ours, reference):
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.add_items(ITEMS[:2])
        await session.add_items(ITEMS[2:])
        await session.add_items([])
    assert await ours.get_items() == await reference.get_items() == ITEMS
    for limit in (1, 2, 5, 100, 0):
        assert await ours.get_items(limit) == await reference.get_items(limit), limit
    assert await ours.pop_item() == await reference.pop_item() == ITEMS[-1]
    assert await ours.get_items() == await reference.get_items() == ITEMS[:-1]
    await ours.clear_session()
    await reference.clear_session()
    assert await ours.get_items() == await reference.get_items() == []
    await ours.add_items([ITEMS[0]])
    assert await ours.get_items() == [ITEMS[0]]  # usable after clear


async def test_sessions_and_users_are_separate_and_settings_limit_applies(memory):
    a, b = MemstreamSession("one", memory, user="alice"), MemstreamSession("two", memory, user="alice")
    bob = MemstreamSession("one", memory, user="bob", session_settings=SessionSettings(limit=1))
    await a.add_items(ITEMS[:2])
    await b.add_items([ITEMS[4]])
    await bob.add_items([{"role": "user", "content": "bob one"}, {"role": "user", "content": "bob two"}])
    assert await a.get_items() == ITEMS[:2] and await b.get_items() == [ITEMS[4]]
    assert await bob.get_items() == [{"role": "user", "content": "bob two"}]  # session_settings.limit
    assert await bob.get_items(limit=5) == [{"role": "user", "content": "bob one"}, {"role": "user", "content": "bob two"}]
    await a.clear_session()
    assert await b.get_items() == [ITEMS[4]] and len(await bob.get_items(limit=5)) == 2
    # The items are memstream turns: searchable, and the tool call is indexed by its name and arguments.
    texts = {t.text for t in memory.list_turns("alice")}
    assert "Book the ryokan for 3 nights." in texts
    with pytest.raises(ValueError, match="user id"):
        MemstreamSession("x", memory, user="")


async def test_turns_from_other_front_ends_read_as_messages(memory):
    from memstream.memory.model import NewTurn

    memory.add("alice", "chat", [NewTurn("user", "typed in memstream chat"), NewTurn("assistant", "answered there")])
    session = MemstreamSession("chat", memory, user="alice")
    assert await session.get_items() == [{"role": "user", "content": "typed in memstream chat"},
                                         {"role": "assistant", "content": "answered there"}]


class ScriptedModel(Model):
    """Replies from a script: each entry is a function of the model's input that returns output items."""

    def __init__(self, script: list[Callable[[list], list]]):
        self.script = list(script)
        self.inputs: list[list] = []

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_):
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        return ModelResponse(output=self.script.pop(0)(items), usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - the tests run non-streaming
        raise NotImplementedError


def say(text: str) -> Callable[[list], list]:
    def reply(_items):
        return [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                      content=[ResponseOutputText(type="output_text", text=text, annotations=[])])]
    return reply


def call_tool(name: str, arguments: dict) -> Callable[[list], list]:
    def reply(_items):
        return [ResponseFunctionToolCall(type="function_call", call_id="call_mem", name=name, arguments=json.dumps(arguments), id="fc", status="completed")]
    return reply


def answer_from_tool_output(items: list) -> list:
    output = next(i["output"] for i in reversed(items) if isinstance(i, dict) and i.get("type") == "function_call_output")
    memories = json.loads(output)
    return say("You told me: " + " | ".join(m["text"] for m in memories))(items)


async def test_an_agent_remembers_across_sessions_through_the_search_tool(memory):
    model = ScriptedModel([say("Noted!"), say("Rex, you said."), call_tool("search_memory", {"query": "dog name"}), answer_from_tool_output])
    agent = Agent(name="assistant", instructions="Use search_memory for the past.", model=model, tools=[memory_search_tool(memory, "alice")])

    monday = MemstreamSession("monday", memory, user="alice")
    await Runner.run(agent, "My dog is called Rex.", session=monday)
    await Runner.run(agent, "What is my dog called?", session=monday)
    assert {"role": "user", "content": "My dog is called Rex."} in model.inputs[1]  # the session fed the history back

    friday = MemstreamSession("friday", memory, user="alice")  # a new session: only the tool can know
    result = await Runner.run(agent, "Remind me of my dog's name?", session=friday)
    assert result.final_output.startswith("You told me: ") and "My dog is called Rex." in result.final_output
    stored = await friday.get_items()
    assert [i.get("type", "message") for i in stored] == ["message", "function_call", "function_call_output", "message"]
    assert "Rex" in stored[2]["output"]

    bob = Agent(name="assistant", model=ScriptedModel([call_tool("search_memory", {"query": "dog name"}), lambda items: say(
        next(i["output"] for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"))(items)]),
        tools=[memory_search_tool(memory, "bob")])
    seen_by_bob = json.loads((await Runner.run(bob, "What is my dog called?", session=MemstreamSession("s", memory, user="bob"))).final_output)
    assert [m["text"] for m in seen_by_bob] == ["What is my dog called?"]  # only his own question: nothing of alice's


@pytest.mark.slow
async def test_the_real_stack_session_and_search(settings):
    """Real MiniLM embedder, real SQLite: what a session stored is found by meaning."""
    from memstream.memory import open_memory

    with open_memory(settings) as memory:
        session = MemstreamSession("cooking", memory, user="alice")
        await session.add_items([{"role": "user", "content": "I bake sourdough bread every Sunday morning."},
                                 {"role": "user", "content": "My car is a blue hatchback."}])
        tool = memory_search_tool(memory, "alice", k=1)
        from agents.tool_context import ToolContext

        ctx = ToolContext(context=None, tool_name="search_memory", tool_call_id="c1", tool_arguments='{"query": "weekend baking habit"}')
        found = json.loads(await tool.on_invoke_tool(ctx, '{"query": "weekend baking habit"}'))
        assert [f["text"] for f in found] == ["I bake sourdough bread every Sunday morning."]
