"""`MemstreamSession`: the OpenAI Agents SDK `Session` protocol over a memstream `Memory`, and a memory-search tool.

A session is one memstream conversation (`session_id`) of one user (fixed at construction: the agent never
names it). Every item the SDK hands over (messages, tool calls, tool outputs, reasoning) is one turn, kept
exactly in its metadata so `get_items` returns what was added, in order; its text (the message text, or
`name(arguments)` for a call, the output for a result) is what memstream indexes, so the conversation is
searchable with everything else the user said. Turns written by other front ends into the same conversation
(`memstream chat`, the HTTP API) come back as plain `{"role", "content"}` messages.

The SDK's methods are async; memstream's are blocking, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents.memory.session_settings import SessionSettings, resolve_session_limit

from memstream.memory import Memory
from memstream.memory.model import NewTurn, Turn
from memstream.memory.validate import check_id

META = "agents_item"
ROLES = {"user", "assistant", "system"}


def item_text(item: dict[str, Any]) -> str:
    """The searchable text of one Responses input item."""
    content = item.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(str(part.get("text") or part.get("refusal") or "") for part in content if isinstance(part, dict))
    elif item.get("type") == "function_call":
        text = f"{item.get('name', 'tool')}({item.get('arguments', '')})"
    elif "output" in item:
        output = item["output"]
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    elif item.get("type") == "reasoning":
        text = "\n".join(str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, dict))
    else:
        text = ""
    return text if text.strip() else f"[{item.get('type') or item.get('role') or 'item'}]"


def item_role(item: dict[str, Any]) -> str:
    role = item.get("role")
    if role in ROLES:
        return role
    if role == "developer":
        return "system"
    return "assistant"  # tool calls, tool outputs and reasoning belong to the agent's side of the turn


def turn_item(turn: Turn) -> dict[str, Any]:
    stored = turn.metadata.get(META)
    if isinstance(stored, dict):
        return stored
    return {"role": turn.role, "content": turn.text}


class MemstreamSession:
    """Agents SDK session backed by memstream: `Runner.run(agent, "...", session=MemstreamSession("chat-1", memory, user="alice"))`."""

    def __init__(self, session_id: str, memory: Memory, *, user: str, session_settings: SessionSettings | None = None):
        self.session_id = check_id("session id", session_id)
        self.user = check_id("user id", user)
        self.memory = memory
        self.session_settings = session_settings

    def _turns(self) -> list[Turn]:
        if not self.memory.has_user(self.user):
            return []
        return self.memory.list_turns(self.user, self.session_id)

    def _get(self, limit: int | None) -> list[dict[str, Any]]:
        if limit is not None and limit <= 0:
            return []
        if limit is None:
            turns = self._turns()
        else:
            turns = self.memory.recent_turns(self.user, self.session_id, limit) if self.memory.has_user(self.user) else []
        return [turn_item(t) for t in turns]

    def _add(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        turns = [NewTurn(item_role(item), item_text(item), metadata={META: json.loads(json.dumps(item, default=str))}) for item in items]
        self.memory.add(self.user, self.session_id, turns)

    def _pop(self) -> dict[str, Any] | None:
        turns = self.memory.recent_turns(self.user, self.session_id, 1) if self.memory.has_user(self.user) else []
        if not turns:
            return None
        self.memory.delete_turn(self.user, turns[-1].id)
        return turn_item(turns[-1])

    def _clear(self) -> None:
        for turn in self._turns():
            self.memory.delete_turn(self.user, turn.id)

    async def get_items(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The session's items in order; with `limit` (or session_settings.limit), the latest N, still in order."""
        return await asyncio.to_thread(self._get, resolve_session_limit(limit, self.session_settings))

    async def add_items(self, items: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._add, list(items))

    async def pop_item(self) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._pop)

    async def clear_session(self) -> None:
        await asyncio.to_thread(self._clear)
