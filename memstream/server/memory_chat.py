"""Memory-augmented chat on POST /v1/chat/completions.

Switched on per request by the model name `memstream/<model>` or the header
`X-Memstream-Memory: on`. The memory user is the OpenAI `user` field (or `X-Memstream-User`),
the conversation the header `X-Memstream-Conversation` (default: `default`).

The server keeps each conversation itself: the last user message is the turn; earlier
messages in the request are not stored again (the agent's flash memory holds the recent
turns), and a client system message is not used (the agent writes its own, with the memories).
The turn runs through `MemoryAgent.stream` on a chat worker (see queue.py: store and retrieval run
concurrently with other chats; only a local model's generation waits in the fair model queue): the
user's turn is stored first, then the reply. A client that disconnects, or the deadline
(server.request_timeout_s), stops the turn at its next piece; what was said is kept. The reply says which memories were used:
- the header `X-Memstream-Memories: <ids>` (comma-separated memory ids, best first), and
- the extension field `memstream` (see `MemoryInfo`) in the JSON body, or in the final SSE
  chunk (the one with `finish_reason`). OpenAI clients ignore both.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from typing import Any, AsyncIterator, Iterator

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.exc import SQLAlchemyError

from memstream.agent.controller import AgentError, Reply, TurnOptions
from memstream.backends.base import BackendError
from memstream.errors import MemstreamError
from memstream.memory.store import check_id
from memstream.server.errors import APIError, from_memstream
from memstream.server.memory_routes import memory_service
from memstream.server.memory_schemas import MemoryInfo, SearchHit
from memstream.server.queue import DeadlineExceeded, RunCancelled, client_gone, deadline_error, watch_disconnect
from memstream.server.tenancy import Tenant, rate_key

MODEL_PREFIX = "memstream/"
MEMORY_HEADER = "x-memstream-memory"
USER_HEADER = "x-memstream-user"
CONVERSATION_HEADER = "x-memstream-conversation"
MEMORIES_HEADER = "X-Memstream-Memories"
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def wants_memory(model: str | None, header: str | None) -> bool:
    if header is not None:
        if header.strip().lower() not in _SWITCH:
            raise APIError(400, f"X-Memstream-Memory must be on or off, got {header!r}", param="X-Memstream-Memory",
                           code="invalid_value")
        if _SWITCH[header.strip().lower()]:
            return True
    return bool(model) and (model == MODEL_PREFIX.rstrip("/") or model.startswith(MODEL_PREFIX))


def base_model(model: str | None) -> str | None:
    """`memstream/smollm2` -> `smollm2`; `memstream` (or no model) -> None, the served default."""
    if not model or model == MODEL_PREFIX.rstrip("/"):
        return None
    return model[len(MODEL_PREFIX):] if model.startswith(MODEL_PREFIX) else model


def memory_info(reply: Reply, user: str) -> dict[str, Any]:
    info = MemoryInfo(user=user, conversation=reply.conversation, memories=[SearchHit.of(h) for h in reply.memories],
                      plan=jsonable_encoder(reply.plan.to_dict()) if reply.plan else None,
                      user_turn_id=reply.user_turn_id, reply_turn_id=reply.reply_turn_id, abstained=reply.abstained)
    return info.model_dump(mode="json")  # what jsonable_encoder gives, without its second walk over the result


def agent_error(exc: Exception, timeout_s: float) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return deadline_error(timeout_s)
    if isinstance(exc, RunCancelled):
        return client_gone()
    if isinstance(exc, AgentError):
        return APIError(502, str(exc), type="server_error", code="backend_error")
    if isinstance(exc, BackendError):
        return APIError(502, str(exc), type="server_error", code="backend_error")
    if isinstance(exc, MemstreamError):
        return from_memstream(exc)  # a busy index (503 with Retry-After), an unknown user (404), bad input (400)
    if isinstance(exc, ValueError):
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, SQLAlchemyError):
        return APIError(503, f"memory store unavailable: {exc}", type="server_error", code="store_unavailable")
    raise exc


async def memory_completion(request: Request, req, tenant: Tenant, model: str, opts: dict[str, Any]):
    """Answer `req` (a ChatRequest) through the memory agent; streams when req.stream."""
    service = memory_service(request)
    user = req.user or request.headers.get(USER_HEADER)
    if not user:
        raise APIError(400, "memory chat needs a user: set the OpenAI `user` field or the X-Memstream-User header",
                       param="user", code="missing_user")
    internal = tenant.internal(user)
    conversation = request.headers.get(CONVERSATION_HEADER) or "default"
    try:
        check_id("conversation", conversation)
    except ValueError as exc:
        raise APIError(400, str(exc), param="X-Memstream-Conversation", code="invalid_value") from None
    last = req.messages[-1]
    if last.role != "user":
        raise APIError(400, f"the last message must be the user's turn (role 'user'), got role {last.role!r}",
                       param=f"messages.{len(req.messages) - 1}.role", code="invalid_value")
    text = last.as_message()["content"]
    retrieved: list[Reply] = []
    options = TurnOptions(max_tokens=opts["max_tokens"], on_retrieved=retrieved.append)

    def produce() -> Iterator[str | Reply]:
        # No separate index catch-up here: storing the user's turn (the agent's first write, before it retrieves)
        # catches the index up with everything committed so far, through any process.
        yield from service.agent.stream(text, internal, conversation, options=options)

    scheduler = request.app.state.scheduler
    timeout_s = scheduler.settings.request_timeout_s
    run = scheduler.admit(rate_key(request, tenant.name))
    release = scheduler.releaser(run)

    watcher = asyncio.ensure_future(watch_disconnect(request, run)) if not req.stream else None
    items = scheduler.iterate(run, produce, last_only=not req.stream)  # a whole reply needs only the final Reply
    pieces: list[str] = []
    final: Reply | None = None
    # Run up to the first item before sending headers: bad input and a failing backend get a proper status,
    # and retrieval (which precedes generation) has reported the memories for the header.
    try:
        first = await anext(items, None)
        if isinstance(first, Reply):
            final = first
        elif first is not None:
            pieces.append(first)
        used = (final or (retrieved[0] if retrieved else None))
        headers = {MEMORIES_HEADER: ",".join(str(h.turn.id) for h in used.memories) if used else ""}
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if not req.stream:
            async for item in items:
                if isinstance(item, Reply):
                    final = item
                else:
                    pieces.append(item)
            if final is None:
                raise client_gone()  # the watcher saw the client leave; what was said is kept
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text},
                             "finish_reason": finish_reason(final, opts["max_tokens"])}],
                "usage": usage(final),
                "memstream": memory_info(final, user),
            }, headers=headers)
    except Exception as exc:  # re-raised by agent_error unless it is one of the failures it maps
        release()
        raise agent_error(exc, timeout_s) from None
    finally:
        if watcher is not None:
            watcher.cancel()
            release()

    def event(delta: dict, finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    async def events() -> AsyncIterator[str]:
        nonlocal final
        try:
            yield event({"role": "assistant", "content": ""})
            for piece in pieces:
                yield event({"content": piece})
            try:
                async for item in items:
                    if isinstance(item, Reply):
                        final = item
                    else:
                        yield event({"content": item})
            except Exception as exc:
                # Headers are sent: report the failure in-band, as OpenAI-compatible servers do.
                yield f"data: {json.dumps(agent_error(exc, timeout_s).body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            finally:
                await items.aclose()  # a client that went away stops the agent at its next piece (what was said is kept)
            assert final is not None, "the agent ended without a Reply"
            yield event({}, finish_reason(final, opts["max_tokens"]), memstream=memory_info(final, user))
            if req.stream_options and req.stream_options.include_usage:
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": usage(final)}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            release()

    body = events()
    weakref.finalize(body, release)  # a stream never started (client gone first) still frees its place
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})


def finish_reason(reply: Reply, max_tokens: int) -> str:
    return "length" if reply.completion_tokens >= max_tokens else "stop"


def usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}
