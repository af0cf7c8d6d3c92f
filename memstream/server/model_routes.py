"""OpenAI-compatible model routes: POST /v1/chat/completions, GET /v1/models, GET /health, GET /ready.

Omitted sampling options mean greedy decoding (temperature 0), so answers are reproducible;
send `temperature` to sample. A chat request for the model `memstream/<model>` (or with
`X-Memstream-Memory: on`) is answered with the user's memory: see memory_chat.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from memstream.backends.base import BackendError, ContextOverflowError, Message
from memstream.server.auth import check_api_key
from memstream.server.tenancy import MAX_USER_CHARS, rate_key
from memstream.server.errors import APIError, error_responses
from memstream.server.queue import (
    ChatScheduler,
    DeadlineExceeded,
    Run,
    RunCancelled,
    client_gone,
    deadline_error,
    watch_disconnect,
)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None

    def as_message(self) -> Message:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        # "developer" is OpenAI's newer name for the system role.
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request the server honours; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)
    """OpenAI's end-user id; with memory switched on, the memory user."""


def generation_options(req: ChatRequest, max_tokens_limit: int, default_max_tokens: int = 256) -> dict[str, Any]:
    max_tokens = req.max_completion_tokens or req.max_tokens or min(default_max_tokens, max_tokens_limit)
    if max_tokens > max_tokens_limit:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {max_tokens_limit}",
                       param="max_tokens", code="invalid_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        raise APIError(400, f"at most 4 stop sequences, got {len(stop)}", param="stop", code="invalid_value")
    return {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "stop": tuple(stop)}


def backend_error(exc: Exception) -> APIError:
    """The HTTP error for a failure raised by the backend."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ValueError):  # the backend's own input checks (empty messages, bad options)
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, BackendError):
        return APIError(502, str(exc), type="server_error", code="backend_error")
    raise exc


def _finish_reason(completion_tokens: int, max_tokens: int) -> str:
    # Backends do not report why they stopped; a reply that used the whole budget was cut.
    return "length" if completion_tokens >= max_tokens else "stop"


def model_router() -> APIRouter:
    """Routes reading app.state: settings, scheduler (ChatScheduler), model_names, memory (MemoryService or None)."""
    router = APIRouter()

    @router.get("/health", tags=["service"], summary="Liveness: the process answers")
    async def health(request: Request) -> dict:
        return {"status": "ok", "model": request.app.state.scheduler.backend.name}

    @router.get("/ready", tags=["service"], summary="Readiness: database reachable and index synced",
                responses={503: {"description": "Not ready: the database is unreachable or the last index sync failed"}})
    async def ready(request: Request) -> JSONResponse:
        memory = request.app.state.memory
        if memory is None:
            return JSONResponse({"status": "ready", "memory": "off"})
        ok, details = await asyncio.to_thread(memory.readiness)
        return JSONResponse({"status": "ready" if ok else "not ready", **details}, status_code=200 if ok else 503)

    @router.get("/v1/models", tags=["model"], responses=error_responses(401))
    async def models(request: Request) -> dict:
        check_api_key(request, request.app.state.settings.server.api_keys)
        created = request.app.state.started_at
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "memstream"}
            for name in listed_models(request.app.state)
        ]}

    @router.post("/v1/chat/completions", tags=["model"], responses=error_responses(400, 401, 404, 413, 429, 502, 503, 504),
                 summary="Chat completion (OpenAI-compatible), plain or with memory")
    async def chat_completions(
        req: ChatRequest,
        request: Request,
        x_memstream_memory: str | None = Header(None, description="on: answer with the user's memory (as does the model name memstream/<model>)"),
        x_memstream_user: str | None = Header(None, description="The memory user when the body has no `user`"),
        x_memstream_conversation: str | None = Header(None, description="The conversation (default: `default`)"),
    ):
        """With memory on, the reply carries `X-Memstream-Memories` (ids of the memories used) and a `memstream`
        field (memories with scores and times, the plan) in the body or the final stream chunk."""
        from memstream.server.memory_chat import base_model, memory_completion, wants_memory
        from memstream.server.tenancy import Tenant

        state = request.app.state
        server = state.settings.server
        tenant = Tenant(check_api_key(request, server.api_keys))
        memory = wants_memory(req.model, x_memstream_memory)
        served = base_model(req.model) if memory else req.model
        if served and served not in state.model_names:
            raise APIError(404, f"model {req.model!r} is not served here; available: {', '.join(listed_models(state))}",
                           param="model", code="model_not_found")
        opts = generation_options(req, server.max_tokens_limit)
        model = req.model or state.scheduler.backend.name
        if memory:
            return await memory_completion(request, req, tenant, model, opts)
        messages = [m.as_message() for m in req.messages]
        scheduler = state.scheduler
        run = scheduler.admit(rate_key(request, tenant.name))
        if req.stream:
            return await _stream_response(scheduler, run, messages, opts, model, req)
        started = time.monotonic()
        watcher = asyncio.ensure_future(watch_disconnect(request, run))
        backend = scheduler.backend

        def produce():
            # Piece by piece, so a client that goes away stops the generation at its next piece.
            parts = []
            for piece in backend.stream(messages, **opts):
                parts.append(piece)
                yield None
            text = "".join(parts)
            yield text, backend.count_tokens(messages), backend.count_tokens(text) if text else 0

        try:
            counted = None
            async for item in scheduler.iterate(run, produce, last_only=True):
                counted = item or counted
            if counted is None:
                raise client_gone()
            text, prompt_tokens, completion_tokens = counted
        except RunCancelled:
            raise client_gone() from None
        except DeadlineExceeded:
            raise deadline_error(server.request_timeout_s) from None
        except (ValueError, BackendError) as exc:
            raise backend_error(exc) from None
        finally:
            watcher.cancel()
            scheduler.done(run, started)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": _finish_reason(completion_tokens, opts["max_tokens"])}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    return router


def listed_models(state) -> list[str]:
    """The served models, then each as `memstream/<model>` (the same model, answering with memory)."""
    names = list(state.model_names)
    if state.memory is not None:
        names += [f"memstream/{name}" for name in state.model_names]
    return names


async def _stream_response(scheduler: ChatScheduler, run: Run, messages: list[Message], opts: dict, model: str,
                           req: ChatRequest):
    backend = scheduler.backend
    release = scheduler.releaser(run)

    pieces = scheduler.iterate(run, lambda: backend.stream(messages, **opts))
    # Pull the first piece before sending headers, so bad input still gets a proper 4xx status.
    try:
        first = await anext(pieces, None)
    except DeadlineExceeded:
        release()
        raise deadline_error(scheduler.settings.request_timeout_s) from None
    except (ValueError, BackendError) as exc:
        release()
        raise backend_error(exc) from None
    except RunCancelled:
        release()
        raise client_gone() from None
    except BaseException:
        release()
        raise
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict, finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    async def events() -> AsyncIterator[str]:
        parts: list[str] = []
        try:
            yield event({"role": "assistant", "content": ""})
            try:
                if first is not None:
                    parts.append(first)
                    yield event({"content": first})
                    async for piece in pieces:
                        parts.append(piece)
                        yield event({"content": piece})
            except DeadlineExceeded:
                yield f"data: {json.dumps(deadline_error(scheduler.settings.request_timeout_s).body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            except (ValueError, BackendError) as exc:
                # Headers are sent: report the failure in-band, as OpenAI-compatible servers do.
                yield f"data: {json.dumps(backend_error(exc).body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            finally:
                await pieces.aclose()  # a client that went away stops the generation at its next piece
            text = "".join(parts)
            # Token counts are cheap and thread-safe: counted here, not queued behind another generation.
            completion_tokens = backend.count_tokens(text) if text else 0
            yield event({}, _finish_reason(completion_tokens, opts["max_tokens"]))
            if req.stream_options and req.stream_options.include_usage:
                prompt_tokens = backend.count_tokens(messages)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": usage}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            release()

    body = events()
    weakref.finalize(body, release)  # a stream never started (client gone first) still frees its place
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
