"""The request body size limit, enforced before anything parses a body.

`BodyLimitMiddleware` reads each request body up to `server.max_body_bytes` and replays it to
the app, so every route (pydantic-validated or raw JSONL) gets the same 413 in OpenAI's error
shape, whether the client declared Content-Length or streamed a chunked upload.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memstream.server.errors import APIError


def too_large(limit: int, declared: int | None = None) -> APIError:
    size = f"is {declared} bytes" if declared is not None else "exceeds the limit"
    return APIError(413, f"request body {size}; the limit is {limit} bytes (server.max_body_bytes)", code="request_too_large")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

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
            message = await receive()
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
