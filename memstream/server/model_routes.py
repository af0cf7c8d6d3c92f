"""OpenAI-compatible model routes: POST /v1/chat/completions, GET /v1/models, GET /health.

Omitted sampling options mean greedy decoding (temperature 0), so answers are reproducible;
send `temperature` to sample.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memstream.backends.base import BackendError, ContextOverflowError, Message
from memstream.server.auth import check_api_key
from memstream.server.body import read_json_body
from memstream.server.errors import APIError


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


def parse_chat_request(data: dict) -> ChatRequest:
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param or 'request'}: {first['msg']}", param=param, code="invalid_value") from None


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
    """Routes reading app.state: settings, generation (GenerationQueue), model_names."""
    router = APIRouter()

    @router.get("/health")
    async def health(request: Request) -> dict:
        return {"status": "ok", "model": request.app.state.generation.backend.name}

    @router.get("/v1/models")
    async def models(request: Request) -> dict:
        check_api_key(request, request.app.state.settings.server.api_keys)
        created = request.app.state.started_at
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "memstream"}
            for name in request.app.state.model_names
        ]}

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        state = request.app.state
        server = state.settings.server
        check_api_key(request, server.api_keys)
        req = parse_chat_request(await read_json_body(request, server.max_body_bytes))
        if req.model and req.model not in state.model_names:
            raise APIError(404, f"model {req.model!r} is not served here; available: {', '.join(state.model_names)}",
                           param="model", code="model_not_found")
        opts = generation_options(req, server.max_tokens_limit)
        messages = [m.as_message() for m in req.messages]
        model = req.model or state.generation.backend.name
        if req.stream:
            return await _stream_response(state.generation, messages, opts, model, req)
        try:
            text = await state.generation.complete(messages, **opts)
            prompt_tokens = await state.generation.run(state.generation.backend.count_tokens, messages)
            completion_tokens = await state.generation.run(state.generation.backend.count_tokens, text) if text else 0
        except (ValueError, BackendError) as exc:
            raise backend_error(exc) from None
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


async def _stream_response(generation, messages: list[Message], opts: dict, model: str, req: ChatRequest):
    pieces = generation.stream(messages, **opts)
    # Pull the first piece before sending headers, so bad input still gets a proper 4xx status.
    try:
        first = await anext(pieces, None)
    except (ValueError, BackendError) as exc:
        raise backend_error(exc) from None
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict, finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    async def events() -> AsyncIterator[str]:
        parts: list[str] = []
        yield event({"role": "assistant", "content": ""})
        try:
            if first is not None:
                parts.append(first)
                yield event({"content": first})
                async for piece in pieces:
                    parts.append(piece)
                    yield event({"content": piece})
        except (ValueError, BackendError) as exc:
            # Headers are sent: report the failure in-band, as OpenAI-compatible servers do.
            yield f"data: {json.dumps(backend_error(exc).body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        text = "".join(parts)
        completion_tokens = await generation.run(generation.backend.count_tokens, text) if text else 0
        yield event({}, _finish_reason(completion_tokens, opts["max_tokens"]))
        if req.stream_options and req.stream_options.include_usage:
            prompt_tokens = await generation.run(generation.backend.count_tokens, messages)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
