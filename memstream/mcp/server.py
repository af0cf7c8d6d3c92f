"""The MCP tools and resources over one `Memory` (the official `mcp` SDK's MCPServer).

Whose memory a call reads or writes is never a tool argument: over stdio it is the user the
server was started for (`memstream mcp --user U`, or `mcp.user` in the settings); over HTTP it
is that user inside the calling API key's tenant (the same `<tenant>/<user>` namespace as the
REST API), resolved per request by `memstream.mcp.http`. A model that writes another name into
an argument can only ever reach the configured user's own rows.

Errors: memstream's own (`MemstreamError`) become tool errors whose text says what to fix; the
SDK turns argument validation failures into tool errors too, so a malformed call never crashes
the server.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any, Callable, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import BaseModel, Field

from memstream.errors import MemstreamError
from memstream.memory import Memory
from memstream.memory.model import NewTurn, Turn
from memstream.retrieval.timeparse import TimeWindow

FORGET_CONFIRMATION = "forget all my memories"
DEFAULT_CONVERSATION = "mcp"
SEARCH_WAIT_S = 2.0
"""A search waits up to this long for the user's pending embeddings (what `remember` just stored)."""
EARLIEST, LATEST = datetime(1900, 1, 1), datetime(2999, 12, 31)

INSTRUCTIONS = """Long-term memory for this user (memstream). Call search_memory before answering questions about the
user's past, preferences or plans; call remember for facts worth keeping. Results carry the time each memory was
said, its id (for forget_memory) and its retrieval scores."""


class TurnIn(BaseModel):
    """One conversation turn to store."""

    role: Literal["user", "assistant", "system"]
    text: str = Field(min_length=1)
    speaker: str | None = None
    event_time: datetime | None = None
    """When it was said (ISO 8601); default now."""


class MemoryOpener:
    """Opens the memory in a background thread, so the server answers `initialize` while the embedder loads."""

    def __init__(self, open_memory: Callable[[], Memory]):
        self._memory: Memory | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(open_memory,), name="memstream-mcp-open", daemon=True)
        self._thread.start()

    def _run(self, open_memory: Callable[[], Memory]) -> None:
        try:
            self._memory = open_memory()
        except BaseException as exc:  # raised, unchanged, to every caller of get()
            self._error = exc
        finally:
            self._done.set()

    def get(self, timeout_s: float = 300.0) -> Memory:
        if not self._done.wait(timeout_s):
            raise ToolError(f"memstream's memory is still opening after {timeout_s:.0f} s; try again shortly")
        if self._error is not None:
            raise self._error
        assert self._memory is not None
        return self._memory

    def close(self) -> None:
        self._done.wait(300.0)
        if self._memory is not None:
            self._memory.close()


def turn_record(turn: Turn) -> dict[str, Any]:
    return {
        "id": turn.id,
        "text": turn.text,
        "time": turn.event_time.isoformat(),
        "conversation": turn.conversation_id,
        "role": turn.role,
        "speaker": turn.speaker,
        "source_id": turn.source_id,
    }


def hit_record(hit) -> dict[str, Any]:
    """A turn's record plus why it was found."""
    return {**turn_record(hit.turn), "score": hit.fused_score, "dense_score": hit.dense_score,
            "lexical_score": hit.lexical_score, "matched_via": hit.matched_via}


def _fail(exc: MemstreamError) -> ToolError:
    if exc.user_fixable:
        return ToolError(str(exc))
    return ToolError(f"memstream is unavailable: {exc}")


def build_server(memory: MemoryOpener, user_for: Callable[[Context], str], name: str = "memstream") -> MCPServer:
    """The MCP server: tools remember, search_memory, list_memories, forget_memory, forget_user, and the
    resources memstream://recent and memstream://conversations/{conversation}/recent.

    `user_for(ctx)` names the memory user of a request (the transport decides; see the module docstring)."""
    server = MCPServer(name, instructions=INSTRUCTIONS)

    def call(ctx: Context, work: Callable[[Memory, str], Any]) -> Any:
        try:
            return work(memory.get(), user_for(ctx))
        except MemstreamError as exc:
            raise _fail(exc) from None

    @server.tool()
    def remember(
        ctx: Context,
        text: Annotated[str | None, Field(description="A note to remember (stored as something the user said).")] = None,
        turns: Annotated[list[TurnIn] | None, Field(description="Conversation turns to store, in order.")] = None,
        conversation: Annotated[str, Field(description="Which conversation they belong to.")] = DEFAULT_CONVERSATION,
    ) -> dict[str, Any]:
        """Store a note or conversation turns in the user's long-term memory; they are searchable at once."""
        if (text is None) == (turns is None):
            raise ToolError("give either text (a note) or turns (a list of {role, text}), not both or neither")
        if text is not None:
            new = [NewTurn("user", text, metadata={"kind": "note", "via": "mcp"})]
        else:
            new = [NewTurn(t.role, t.text, t.speaker, t.event_time, {"via": "mcp"}) for t in turns or []]
            if not new:
                raise ToolError("turns is empty: give at least one {role, text}")
        stored = call(ctx, lambda mem, user: mem.add(user, conversation, new))
        return {"stored": [turn_record(t) for t in stored]}

    @server.tool()
    def search_memory(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, description="What to look for, in words.")],
        k: Annotated[int, Field(ge=1, le=100, description="How many memories to return.")] = 10,
        since: Annotated[datetime | None, Field(description="Only memories said at or after this time (ISO 8601).")] = None,
        until: Annotated[datetime | None, Field(description="Only memories said before this time (ISO 8601).")] = None,
        conversation: Annotated[str | None, Field(description="Only this conversation.")] = None,
    ) -> dict[str, Any]:
        """Hybrid (meaning + keyword, time-aware) search of the user's memory, best first."""
        window = None
        if since is not None or until is not None:
            start, end = since or EARLIEST, until or LATEST
            if start >= end:
                raise ToolError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
            window = TimeWindow(start, end, "since/until")

        def work(mem: Memory, user: str):
            if not mem.has_user(user):
                return None
            return mem.search(user, query, k, time_window=window, conversation=conversation, time_mode="filter" if window else None,
                              wait_s=SEARCH_WAIT_S)

        result = call(ctx, work)
        if result is None:
            return {"hits": [], "time_window": None}
        return {"hits": [hit_record(h) for h in result.hits], "time_window": result.time_window.to_dict() if result.time_window else None}

    @server.tool()
    def list_memories(
        ctx: Context,
        conversation: Annotated[str | None, Field(description="Only this conversation.")] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        """The user's stored memories, newest first by default."""

        def work(mem: Memory, user: str):
            if not mem.has_user(user):
                return []
            return mem.list_turns(user, conversation, limit=limit, offset=offset, newest_first=newest_first)

        return {"memories": [turn_record(t) for t in call(ctx, work)]}

    @server.tool()
    def forget_memory(ctx: Context, memory_id: Annotated[int, Field(ge=1, description="The id from search_memory or list_memories.")]) -> dict[str, Any]:
        """Delete one memory; it is gone from search at once."""

        def work(mem: Memory, user: str) -> bool:
            return mem.has_user(user) and mem.delete_turn(user, memory_id)

        if not call(ctx, work):
            raise ToolError(f"no memory #{memory_id}")
        return {"deleted": memory_id}

    @server.tool()
    def forget_user(
        ctx: Context,
        confirm: Annotated[str, Field(description=f"Must be exactly {FORGET_CONFIRMATION!r}: this deletes everything.")],
    ) -> dict[str, Any]:
        """Delete every memory of this user. Irreversible: ask the user first and pass the confirmation phrase."""
        if confirm.strip().lower() != FORGET_CONFIRMATION:
            raise ToolError(f"not confirmed: nothing deleted (pass confirm={FORGET_CONFIRMATION!r} once the user agreed)")

        def work(mem: Memory, user: str) -> dict[str, int]:
            return mem.forget_user(user) if mem.has_user(user) else {"turns": 0, "sessions": 0, "facts": 0}

        return {"forgotten": call(ctx, work)}

    def recent(ctx: Context, conversation: str | None, limit: int) -> list[dict[str, Any]]:
        if not 1 <= limit <= 500:
            raise ResourceError(f"limit must be 1..500, got {limit}")

        def work(mem: Memory, user: str):
            if not mem.has_user(user):
                return []
            return mem.list_turns(user, conversation, limit=limit, newest_first=True)

        try:
            return [turn_record(t) for t in call(ctx, work)]
        except ToolError as exc:
            raise ResourceError(str(exc)) from None

    @server.resource("memstream://recent{?limit}", name="recent_memories", mime_type="application/json")
    def recent_memories(ctx: Context, limit: int = 20) -> list[dict[str, Any]]:
        """The user's most recent memories, across conversations, newest first."""
        return recent(ctx, None, limit)

    @server.resource("memstream://conversations/{conversation}/recent{?limit}", name="recent_in_conversation", mime_type="application/json")
    def recent_in_conversation(ctx: Context, conversation: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent memories of one conversation, newest first."""
        return recent(ctx, conversation, limit)

    return server
