"""The memstream HTTP server: one FastAPI app, route modules mounted on it.

`create_app(settings, backend)` builds it (tests pass their own backend); `serve(...)` runs it
with uvicorn. State on `app.state`: settings, generation (the GenerationQueue every backend
call goes through), model_names (what /v1/models lists and requests may name), started_at.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from memstream.backends.base import ChatBackend
from memstream.config import ConfigError, Settings
from memstream.server.errors import install_error_handlers
from memstream.server.model_routes import model_router
from memstream.server.queue import GenerationQueue


def create_app(settings: Settings, backend: ChatBackend | None = None) -> FastAPI:
    if backend is None:
        from memstream.backends.models import make_backend

        backend = make_backend(settings.backend, settings.attention)
    generation = GenerationQueue(backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        generation.close()

    app = FastAPI(title="memstream", lifespan=lifespan)
    app.state.settings = settings
    app.state.generation = generation
    app.state.model_names = [backend.name]
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.include_router(model_router())
    return app


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
    app = create_app(settings, backend)
    uvicorn.run(app, host=host, port=port, log_level="info")


class ServerThread:
    """Run an app with uvicorn on a background thread (tests, embedding a server in another program).

    `port=0` picks a free port; `url` is the base URL once `start()` returns.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
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
