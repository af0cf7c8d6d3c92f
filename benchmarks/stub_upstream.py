"""An OpenAI-compatible stub upstream: answers every chat after a fixed delay, streaming or not.

It stands in for a remote model (OpenAI, vLLM...) in load benchmarks and tests, so what is measured
is memstream's own concurrency, not a model's speed. Its own process, on loopback:

    python benchmarks/stub_upstream.py --port 9001 --delay-ms 300

Routes: POST /v1/chat/completions (the reply names the last user message; `stream: true` sends it as
SSE chunks, the first after the delay), GET /v1/models, GET /health. `stub_app(delay_s)` is the ASGI
app, for an in-process thread (`memstream.server.app.ServerThread`-style) in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL = "stub"


def reply_for(body: dict) -> str:
    last = next((m.get("content") or "" for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    text = last if isinstance(last, str) else ""
    return f"Stub reply about: {text[:60]}"


def stub_app(delay_s: float = 0.3) -> Starlette:
    state = {"requests": 0, "in_flight": 0, "peak": 0}

    async def chat(request: Request):
        body = await request.json()
        state["requests"] += 1
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        try:
            await asyncio.sleep(delay_s)
        finally:
            state["in_flight"] -= 1
        text = reply_for(body)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        words = text.split(" ")[: max(1, int(body.get("max_tokens") or 256))]
        if not body.get("stream"):
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": body.get("model", MODEL),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)},
            })

        async def events():
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body.get("model", MODEL),
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            done = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body.get("model", MODEL),
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(done)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "stub"}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok", **state})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", health)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--delay-ms", type=float, default=300.0)
    args = parser.parse_args()
    uvicorn.run(stub_app(args.delay_ms / 1000), host="127.0.0.1", port=args.port, log_level="warning",
                backlog=2048, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
