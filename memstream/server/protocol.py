"""Connection-level limits uvicorn lacks: a header read timeout and a connection cap, both in OpenAI's error shape.

`http_protocol(settings)` returns a subclass of uvicorn's h11 protocol that
- closes a connection whose request headers are not complete within server.header_timeout_s of its
  first byte (or of the connection opening), answering 408: a client that trickles headers, or opens
  sockets and sends nothing, cannot hold a connection for ever;
- answers 503 and closes when server.max_connections connections are already open.
The body read timeout is the body middleware's (body.py): the app sees the request by then.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

from memstream.config import ServerSettings
from memstream.server.errors import APIError


def raw_response(error: APIError) -> bytes:
    """A complete HTTP/1.1 response that closes the connection (written before h11 has a request to answer)."""
    body = json.dumps(error.body()).encode()
    reason = {408: "Request Timeout", 503: "Service Unavailable"}.get(error.status, "Error")
    head = (f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def http_protocol(settings: ServerSettings) -> type[H11Protocol]:
    header_timeout_s = settings.header_timeout_s
    max_connections = settings.max_connections

    class LimitedH11Protocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                error = APIError(503, f"too many open connections (server.max_connections {max_connections}); retry later",
                                 type="server_error", code="too_many_connections", headers={"Retry-After": "1"})
                transport.write(raw_response(error))
                transport.close()
                return
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.header_timer is None:
                self._arm_header_timer()  # first bytes of the next request on a kept-alive connection
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # h11 parsed a complete request head
                self._disarm_header_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self.header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _header_timeout(self) -> None:
            self.header_timer = None
            if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
                return
            error = APIError(408, f"request headers did not arrive within {header_timeout_s:g}s (server.header_timeout_s)",
                             code="request_timeout")
            self.transport.write(raw_response(error))
            self.transport.close()

    return LimitedH11Protocol
