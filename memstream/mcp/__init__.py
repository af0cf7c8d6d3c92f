"""memstream as an MCP server (`memstream mcp`), for Claude Desktop and Code, Cursor, VS Code and any MCP client.

    memstream mcp --user alice                        # stdio, the default for desktop clients
    memstream mcp --transport http --api-key KEY      # streamable HTTP at http://127.0.0.1:8766/mcp

A thin layer over `memstream.memory.open_memory`: tools in `server.py`, HTTP auth in `http.py`.
Needs the `mcp` extra: pip install 'memstream[mcp]'.
"""

from __future__ import annotations

from memstream.config import Settings
from memstream.memory import Memory, open_memory
from memstream.memory.validate import check_id
from memstream.mcp.server import MemoryOpener, build_server


def opener(settings: Settings, embedder=None) -> MemoryOpener:
    return MemoryOpener(lambda: open_memory(settings, embedder))


def stdio_server(settings: Settings, user: str, memory: MemoryOpener):
    """The MCP server for one configured user (stdio, or in-process tests)."""
    check_id("user id", user)
    return build_server(memory, lambda ctx: user)


def run_stdio(settings: Settings, user: str | None = None) -> None:
    """Serve `user` (default mcp.user) over stdin/stdout until the client closes it."""
    user = check_id("user id", user if user is not None else settings.mcp.user)  # before anything opens
    memory = opener(settings)
    try:
        stdio_server(settings, user, memory).run("stdio")
    finally:
        memory.close()


def run_http(settings: Settings, user: str | None = None, host: str | None = None, port: int | None = None) -> None:
    """Serve streamable HTTP until interrupted; each API key's tenant gets its own `user`."""
    import uvicorn

    from memstream.mcp.http import http_app, http_user_for
    from memstream.server.app import check_bind

    host = host or settings.mcp.host
    port = settings.mcp.port if port is None else port
    user = check_id("user id", user if user is not None else settings.mcp.user)
    check_bind(settings, host)  # before the memory opens: an unauthenticated public bind is refused at once
    memory = opener(settings)
    try:
        app = http_app(build_server(memory, http_user_for(user)), settings, host)
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        memory.close()


__all__ = ["Memory", "MemoryOpener", "build_server", "opener", "run_http", "run_stdio", "stdio_server"]
