"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, whatever went wrong.

Route code raises `APIError`; `install_error_handlers` turns it, FastAPI's validation errors
and Starlette's HTTP errors (404 route, 405 method) into that shape, so every client that
reads OpenAI errors (the openai SDK included) shows the message.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from memstream.errors import BusyError, MemstreamError, NotFoundError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer", **self.headers} if self.status == 401 else self.headers
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)


class ErrorDetail(BaseModel):
    message: str
    """What went wrong and, where the client can fix it, how."""
    type: str
    param: str | None = None
    """The request field at fault, dotted (e.g. `messages.0.role`)."""
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: OpenAI's error shape."""

    error: ErrorDetail


_WHEN = {
    400: "Malformed request: invalid JSON, a missing or out-of-range field (the message names it)",
    401: "Missing or wrong API key ('Authorization: Bearer <key>')",
    404: "Unknown user, memory or route (another tenant's users are unknown too)",
    408: "The request's headers or body did not arrive in time (server.header_timeout_s, server.body_timeout_s)",
    409: "An Idempotency-Key still in progress, or reused with a different body",
    413: "Request body larger than server.max_body_bytes",
    415: "A state-changing request without a JSON (or, for import, NDJSON) Content-Type on a keyless server",
    429: "Too many requests for this API key: its queue share (server.max_queue_per_key) or its rate limit "
         "(server.rate_limit_per_minute); wait Retry-After seconds",
    502: "The chat backend failed (for memory chat, the user's turn is kept)",
    503: "Memory is not available (database unreachable), the server's chat queue is full (server.max_queue), or "
         "the index is too far behind its writes (retrieval.max_pending_keys): retry after Retry-After seconds",
    504: "The request ran past server.request_timeout_s (for memory chat, what was committed stays)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all in the ErrorResponse shape."""
    return {status: {"model": ErrorResponse, "description": _WHEN[status]} for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return APIError(400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                            code="invalid_json").response()
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return APIError(400, f"{param or 'request'}: {first['msg']}", param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(MemstreamError)
    async def _memstream(request: Request, exc: MemstreamError) -> JSONResponse:
        return from_memstream(exc).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a client mistake: still OpenAI's shape, so clients show it; Starlette logs the traceback.
        return internal_error().response()


def from_memstream(exc: MemstreamError) -> APIError:
    """The one mapping of memstream's errors to HTTP: the caller's mistakes are 4xx, outages 503."""
    if isinstance(exc, NotFoundError):
        return APIError(404, str(exc), code="not_found")
    if exc.user_fixable:
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, BusyError):
        return APIError(503, str(exc), type="server_error", code="memory_busy",
                        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    return APIError(503, f"memory store unavailable: {exc}", type="server_error", code="store_unavailable")


def internal_error() -> APIError:
    return APIError(500, "internal server error (logged on the server)", type="server_error", code="internal_error")
