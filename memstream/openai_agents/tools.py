"""A memory-search tool for Agents SDK agents: hybrid search over one user's whole memory (every conversation)."""

from __future__ import annotations

import json

from agents import FunctionTool, function_tool

from memstream.errors import MemstreamError
from memstream.memory import Memory
from memstream.memory.validate import check_id

SEARCH_WAIT_S = 2.0
"""Wait up to this long for the user's pending embeddings (what the session just stored)."""


def memory_search_tool(memory: Memory, user: str, *, k: int = 5, name: str = "search_memory") -> FunctionTool:
    """A tool that searches `user`'s memory; the user is fixed here, never a tool argument."""
    check_id("user id", user)

    @function_tool(name_override=name)
    def search_memory(query: str, limit: int = k) -> str:
        """Search the user's long-term memory (everything they said before, in any conversation), best first.

        Args:
            query: What to look for, in words.
            limit: How many memories to return (1-50).
        """
        if not 1 <= limit <= 50:
            return f"limit must be between 1 and 50, got {limit}"
        if not memory.has_user(user):
            return "[]"
        try:
            result = memory.search(user, query, limit, wait_s=SEARCH_WAIT_S)
        except MemstreamError as exc:
            if not exc.user_fixable:
                raise
            return f"cannot search: {exc}"
        return json.dumps([
            {"id": h.turn.id, "text": h.turn.text, "time": h.turn.event_time.isoformat(), "conversation": h.turn.conversation_id,
             "role": h.turn.role, "score": round(h.fused_score, 5)}
            for h in result.hits
        ], ensure_ascii=False)

    return search_memory
