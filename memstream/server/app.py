"""The memstream HTTP server: one FastAPI app, route modules mounted on it.

`create_app(settings, backend)` builds it (tests pass their own backend); `serve(...)` runs it
with uvicorn. State on `app.state`: settings, scheduler (the ChatScheduler every chat goes
through: admission, workers, the local model's fair queue; see queue.py), model_names (what
/v1/models lists and requests may name), memory (the MemoryService, opened at startup; None
with server.memory off), started_at.

Layers, outermost first: the connection protocol (header timeout, connection cap: protocol.py),
the guard (Host allowlist, content types, rate limit: guard.py), the body limit and read timeout
(body.py), then the routes.

Shutdown (SIGINT/SIGTERM) is uvicorn's graceful one: it stops accepting connections, lets the
requests in flight finish (their turns are committed as they go), then the lifespan closes the
memory service (queued enrichment done, index cache saved where this process owns it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from memstream.backends.base import ChatBackend
from memstream.config import ConfigError, ServerSettings, Settings
from memstream.retrieval.embedder import EmbedderCache
from memstream.server.body import BodyLimitMiddleware
from memstream.server.errors import install_error_handlers
from memstream.server.guard import GuardMiddleware
from memstream.server.idempotency import IdempotencyKeys
from memstream.server.memory_routes import memory_router
from memstream.server.memory_service import MemoryService
from memstream.server.model_routes import model_router
from memstream.server.protocol import http_protocol
from memstream.server.queue import ChatScheduler
from memstream.server.tenancy import check_tenants


def create_app(settings: Settings, backend: ChatBackend | None = None, embedders: EmbedderCache | None = None) -> FastAPI:
    """The app; `embedders` shares loaded embedding models (tests, several apps in one process)."""
    check_tenants(settings.server.api_keys)
    if backend is None:
        from memstream.backends.models import make_backend

        backend = make_backend(settings.backend, settings.attention)
    scheduler = ChatScheduler(backend, settings.server)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        memory = None
        if settings.server.memory:
            # Blocking (embedder load, first index sync): the server accepts requests only once memory is ready.
            # The agent gets the scheduled backend: its generation waits in the model queue, nothing else does.
            memory = await asyncio.to_thread(MemoryService, settings, scheduler.backend, embedders)
        app.state.memory = memory
        if memory is not None:
            app.state.idempotency = await asyncio.to_thread(IdempotencyKeys, memory.store.engine, settings.server.request_timeout_s)
        stop = asyncio.Event()
        refresh = asyncio.create_task(memory.refresh_forever(stop)) if memory else None
        try:
            yield
        finally:
            # uvicorn has finished the in-flight requests by now; every committed turn is in the database.
            stop.set()
            if refresh is not None:
                await refresh
            scheduler.close()
            if memory is not None:
                await asyncio.to_thread(memory.close)

    app = FastAPI(title="memstream", version=_version(), lifespan=lifespan, description=DESCRIPTION)
    app.state.settings = settings
    app.state.scheduler = scheduler
    app.state.model_names = [backend.name]
    app.state.memory = None
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.server.max_body_bytes, timeout_s=settings.server.body_timeout_s)
    app.add_middleware(GuardMiddleware, settings=settings.server)  # added last: runs first
    app.include_router(model_router())
    app.include_router(memory_router())
    return app


DESCRIPTION = """memstream's HTTP API: OpenAI-compatible chat, plain or with long-term memory, and memory REST routes.

* **Auth**: `Authorization: Bearer <key>` when the server has keys (`server.api_keys`, key -> tenant).
  A key sees only its tenant's users; another tenant's user is answered like an unknown one (404).
* **Memory chat**: model `memstream/<model>` or header `X-Memstream-Memory: on`; the memory user is the
  OpenAI `user` field (or `X-Memstream-User`), the conversation `X-Memstream-Conversation`. Replies carry
  `X-Memstream-Memories` and a `memstream` field with the memories used.
* **Limits**: request bodies up to `server.max_body_bytes` (413 past it), `max_tokens` up to
  `server.max_tokens_limit`, search `k` 1..100, list pages of 1..500, 1000 turns per add, user ids up to
  128 characters (any characters but control characters; `/` included).
* **Load**: chats are admitted while the server has room (`server.chat_workers` running,
  `server.max_queue` waiting; 503 past it) and the key its share (`server.max_queue_per_key`; 429 past it),
  both with `Retry-After`; `server.rate_limit_per_minute` caps requests per key (429). Every chat has a
  deadline, `server.request_timeout_s` (504). Headers must arrive within `server.header_timeout_s`, a body
  must not stall for `server.body_timeout_s` (408).
* **Idempotency**: `Idempotency-Key: <up to 200 characters>` on add and import: the same key with the same
  body stores once and returns the first answer; with another body, 409.
* **Keyless servers** (loopback only): the Host must be a loopback name (`server.allowed_hosts`), and writes
  must be `application/json` (or `application/x-ndjson` for import), 415 otherwise.
* **Errors**: OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.
* **Several processes**: with a PostgreSQL `db_url`, every process sees every committed turn on its next search
  (each search catches up first) and catches up in the background every `server.index_refresh_s` seconds.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memstream")
    except PackageNotFoundError:
        return "0"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to expose an unauthenticated server beyond this machine."""
    if not settings.server.api_keys and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an API key: pass --api-key (or set server.api_keys), "
            "or bind to 127.0.0.1"
        )


def serve(settings: Settings, host: str | None = None, port: int | None = None, backend: ChatBackend | None = None) -> None:
    """Run the server until interrupted (blocking)."""
    import uvicorn

    host = host or settings.server.host
    port = settings.server.port if port is None else port
    check_bind(settings, host)
    sys.setswitchinterval(settings.server.switch_interval_ms / 1000)  # this process is the server's: see the setting
    app = create_app(settings, backend)
    uvicorn.run(app, host=host, port=port, log_level="info", http=http_protocol(settings.server))


class ServerThread:
    """Run an app with uvicorn on a background thread (tests, embedding a server in another program).

    `port=0` picks a free port; `url` is the base URL once `start()` returns.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        # A memstream app carries its settings; another ASGI app (the MCP server's) gets the default limits.
        settings = getattr(getattr(app, "state", None), "settings", None)
        protocol = http_protocol(settings.server if settings is not None else ServerSettings())
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=protocol))
        self.thread = threading.Thread(target=self.server.run, name="memstream-server", daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 30.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.host}:{self.port} did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
