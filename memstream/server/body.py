"""The request body size limit and read timeout, enforced before anything parses a body.

`BodyLimitMiddleware` reads each request body up to `server.max_body_bytes` and replays it to
the app, so every route (pydantic-validated or raw JSONL) gets the same 413 in OpenAI's error
shape, whether the client declared Content-Length or streamed a chunked upload. A body that stalls
for `server.body_timeout_s` between pieces (a client that declared 1000 bytes and sent 10) is
answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memstream.server.errors import APIError


def too_large(limit: int, declared: int | None = None) -> APIError:
    size = f"is {declared} bytes" if declared is not None else "exceeds the limit"
    return APIError(413, f"request body {size}; the limit is {limit} bytes (server.max_body_bytes)", code="request_too_large")


def body_timeout(timeout_s: float) -> APIError:
    return APIError(408, f"the request body stalled for {timeout_s:g}s (server.body_timeout_s): send the whole body",
                    code="request_timeout", headers={"Connection": "close"})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = 30.0):
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(self.limit, int(declared)).response()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                await body_timeout(self.timeout_s).response()(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            # Counted while reading, so a chunked upload without Content-Length cannot exceed the limit either.
            if size > self.limit:
                await too_large(self.limit).response()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would report it

        await self.app(scope, replay, send)
