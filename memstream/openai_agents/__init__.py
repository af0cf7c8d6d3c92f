"""memstream for the OpenAI Agents SDK: `MemstreamSession` (the SDK's Session protocol) and `memory_search_tool`.

    memory = open_memory(load_settings())
    agent = Agent(name="assistant", tools=[memory_search_tool(memory, "alice")])
    await Runner.run(agent, "What did I say about my trip?", session=MemstreamSession("chat-1", memory, user="alice"))

Needs the `agents` extra: pip install 'memstream[agents]'.
"""

from memstream.openai_agents.session import MemstreamSession
from memstream.openai_agents.tools import memory_search_tool

__all__ = ["MemstreamSession", "memory_search_tool"]
