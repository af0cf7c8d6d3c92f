"""Reading a JSON request body with a size limit, before anything parses it."""

from __future__ import annotations

import json

from fastapi import Request

from memstream.server.errors import APIError


async def read_json_body(request: Request, limit: int) -> dict:
    """The body as a JSON object; 413 past `limit` bytes (checked while reading), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit} (server.max_body_bytes)",
                       code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    # Count while streaming so a chunked upload without Content-Length cannot exceed the limit either.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes (server.max_body_bytes)",
                           code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return data
