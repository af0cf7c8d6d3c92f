"""Memory REST routes: add, list, search and delete memories; forget, export and import a user.

Every route checks the bearer key first and works only inside the key's tenant (see
tenancy.py): a user of another tenant is reported exactly like a user that does not exist.
Blocking store and index work runs on worker threads, never on the event loop.

User ids may contain "/" (`org/alice`): the user routes take the rest of the path as the id, so
`/v1/users/org/alice/export` and `/v1/users/org%2Falice/export` both name `org/alice`.
Add and import honour `Idempotency-Key` (idempotency.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Iterator

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from memstream.memory.model import NewTurn
from memstream.errors import MemstreamError
from memstream.memory.store import MAX_ID_LENGTH, naive_utc
from memstream.retrieval.errors import RetrievalError
from memstream.retrieval.timeparse import TimeWindow
from memstream.server.errors import APIError, error_responses, from_memstream
from memstream.server.idempotency import IdempotencyKeys, check_key, fingerprint
from memstream.server.memory_schemas import (
    MAX_INT64,
    MAX_PAGE,
    AddedMemories,
    AddMemories,
    Deleted,
    Forgotten,
    Imported,
    Memory,
    MemoryPage,
    SearchHit,
    SearchRequest,
    SearchResponse,
    TimeWindowOut,
)
from memstream.server.memory_service import MemoryService
from memstream.server.records import check_records
from memstream.server.tenancy import MAX_USER_CHARS, Tenant, tenant_for

# Open-ended windows need finite bounds (the index compares Unix timestamps).
EARLIEST = datetime(1900, 1, 1)
LATEST = datetime(9000, 1, 1)
UserQuery = Query(..., min_length=1, max_length=MAX_USER_CHARS, description="The memory user.")
UserPath = Path(..., min_length=1, max_length=MAX_USER_CHARS, description="The memory user; may contain '/'.")
IdempotencyHeader = Header(None, alias="Idempotency-Key", description="Retry-safe writes: the same key and body store once.")


def memory_service(request: Request) -> MemoryService:
    service = request.app.state.memory
    if service is None:
        raise APIError(503, "memory is switched off on this server (server.memory = false)", type="server_error",
                       code="memory_disabled")
    return service


def unknown_user(user: str) -> APIError:
    return APIError(404, f"unknown user {user!r}: nothing is stored for this user", param="user", code="user_not_found")


async def known_user(service: MemoryService, tenant: Tenant, user: str) -> str:
    """The store id of an existing user of this tenant; 404 otherwise (other tenants' users included)."""
    return await blocking(require_user, service, tenant, user)


def require_user(service: MemoryService, tenant: Tenant, user: str) -> str:
    """known_user on the calling thread: a route whose work runs on a thread anyway checks there, saving a hop."""
    internal = tenant.internal(user)
    if not service.store.has_user(internal):
        raise unknown_user(user)
    return internal


async def blocking(fn, *args, **kwargs):
    """Run memory work on a thread; the client's mistakes become 400/404, a database failure a 503 naming it."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except MemstreamError as exc:
        raise from_memstream(exc) from None


async def index_room(service) -> None:
    """Wait for room in the index backlog on the event loop, not on one of the few threads `blocking` runs on (a
    waiting add there would hold up searches); 503 `memory_busy` if none comes within retrieval.pending_wait_s."""
    memory = service.memory
    deadline = time.monotonic() + memory.settings.retrieval.pending_wait_s
    while not memory.index_has_room():
        if time.monotonic() >= deadline:
            raise from_memstream(memory.index_busy())
        await asyncio.sleep(0.05)


async def idempotent(request: Request, tenant: Tenant, key: str | None, route: str, user: str, body: bytes, write, replay):
    """Run `write(also)` (-> (status, JSON body)) at most once per Idempotency-Key; without a key, just run it.

    `also` is None without a key; with one it records the write's outcome in the write's own transaction, and
    `replay(outcome)` (-> (status, JSON body)) rebuilds the answer of a write that committed but never answered."""
    if key is None:
        status, payload = await write(None)
        return JSONResponse(payload, status_code=status)
    check_key(key)
    keys: IdempotencyKeys = request.app.state.idempotency
    owner, print_ = tenant.name or "", fingerprint(route, user, body)
    first = await blocking(keys.claim, owner, key, print_)
    if first is not None:
        status, payload = (first.status, first.body) if first.body is not None else await replay(first.outcome)
        return JSONResponse(payload, status_code=status, headers={"Idempotent-Replayed": "true"})
    try:
        status, payload = await write(keys.recorder(owner, key))
    except BaseException:
        await blocking(keys.release, owner, key)  # a retry must run again, unless the write had committed
        raise
    await blocking(keys.finish, owner, key, status, payload)
    return JSONResponse(payload, status_code=status)


def memory_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["memory"])

    @router.post("/memories", status_code=201, response_model=AddedMemories,
                 responses=error_responses(400, 401, 409, 413, 415, 503), summary="Add turns to a user's memory")
    async def add_memories(body: AddMemories, request: Request, idempotency_key: str | None = IdempotencyHeader):
        """Store turns (a conversation's history, or facts the bot learned) and index them. At most 1000 turns per call."""
        tenant = tenant_for(request)
        service = memory_service(request)
        internal = tenant.internal(body.user)
        turns = [NewTurn(t.role, t.text, t.speaker, t.time, t.metadata) for t in body.turns]  # validated at the door

        def answer(stored) -> tuple[int, dict]:
            return 201, AddedMemories(data=[Memory.of(t, body.user) for t in stored]).model_dump(mode="json")

        async def write(also):
            await index_room(service)
            try:
                stored = await blocking(service.agent.remember, internal, body.conversation, turns, also=also)
            except ValueError as exc:
                raise APIError(400, str(exc), code="invalid_value") from None
            return answer(stored)

        async def replay(turn_ids):
            return answer(await blocking(service.store.get_turns, internal, turn_ids))

        return await idempotent(request, tenant, idempotency_key, "add", internal, await request.body(), write, replay)

    @router.get("/memories", response_model=MemoryPage, responses=error_responses(400, 401, 404, 503),
                summary="List a user's memories, oldest first")
    async def list_memories(
        request: Request,
        user: str = UserQuery,
        conversation: str | None = Query(None, min_length=1, max_length=MAX_ID_LENGTH),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_INT64),
    ) -> MemoryPage:
        tenant = tenant_for(request)
        service = memory_service(request)

        def page():
            return service.store.list_turns(require_user(service, tenant, user), conversation, limit=limit + 1, offset=offset)

        async with service.read_gate:
            turns = await blocking(page)
        more = len(turns) > limit
        return MemoryPage(data=[Memory.of(t, user) for t in turns[:limit]], has_more=more,
                          next_offset=offset + limit if more else None)

    @router.post("/memories/search", response_model=SearchResponse, responses=error_responses(400, 401, 404, 413, 503),
                 summary="Search a user's memories")
    async def search_memories(body: SearchRequest, request: Request) -> SearchResponse:
        """Hybrid (dense + BM25) time-aware search. `since`/`until` keep only memories inside the window;
        without them, a time expression in the query ("last May", resolved against `at`) boosts memories inside it."""
        tenant = tenant_for(request)
        service = memory_service(request)
        window, time_mode = None, None
        if body.since is not None or body.until is not None:
            start, end = naive_utc(body.since) or EARLIEST, naive_utc(body.until) or LATEST
            if start >= end:
                raise APIError(400, "since must be earlier than until", param="since", code="invalid_value")
            window, time_mode = TimeWindow(start, end, "since/until"), "filter"

        def search():
            # One trip to a thread: the user check, the catch-up and the search (each trip wakes the event loop).
            internal = require_user(service, tenant, body.user)
            service.sync()  # turns written through other processes are found on the next search
            return service.memory.search(internal, body.query, k=body.k, now=naive_utc(body.at), conversation=body.conversation,
                                         time_window=window, mode=body.mode, time_mode=time_mode)

        try:
            async with service.read_gate:
                result = await blocking(search)
        except RetrievalError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        found = result.time_window
        response = SearchResponse(
            query=result.query,
            time_window=TimeWindowOut(start=found.start, end=found.end, expression=found.expression) if found else None,
            data=[SearchHit.of(hit) for hit in result.hits],
        )
        # Serialised once: returning the model would have FastAPI dump, re-validate and dump it again.
        return Response(response.model_dump_json(), media_type="application/json")

    @router.delete("/memories/{memory_id}", response_model=Deleted, responses=error_responses(401, 404, 503),
                   summary="Delete one memory")
    async def delete_memory(request: Request, memory_id: int = Path(..., ge=1, le=MAX_INT64), user: str = UserQuery) -> Deleted:
        """Every server process stops returning it by its next search (the delete leaves a tombstone)."""
        tenant = tenant_for(request)
        service = memory_service(request)
        if not await blocking(lambda: service.memory.delete_turn(require_user(service, tenant, user), memory_id)):
            raise APIError(404, f"memory {memory_id} not found for user {user!r}", param="memory_id", code="memory_not_found")
        return Deleted(id=memory_id, deleted=True)

    @router.delete("/users/{user:path}", response_model=Forgotten, responses=error_responses(401, 404, 503),
                   summary="Forget a user: delete all their memories")
    async def forget_user(request: Request, user: str = UserPath) -> Forgotten:
        tenant = tenant_for(request)
        service = memory_service(request)
        internal = await known_user(service, tenant, user)
        counts = await blocking(service.memory.forget_user, internal)
        return Forgotten(user=user, turns=counts["turns"], facts=counts["facts"], sessions=counts["sessions"])

    @router.get("/users/{user:path}/export", responses={200: {"content": {"application/x-ndjson": {}},
                                                         "description": "One JSON record per line: sessions, turns, facts"},
                                                   **error_responses(401, 404, 503)},
                summary="Export a user's memory as JSONL")
    async def export_user(request: Request, user: str = UserPath) -> StreamingResponse:
        """Records carry no user name, so an export imports into any user (`POST /v1/users/{user}/import`)."""
        tenant = tenant_for(request)
        service = memory_service(request)
        internal = await known_user(service, tenant, user)

        def lines() -> Iterator[str]:
            for record in service.store.export_user(internal):
                yield json.dumps(record, ensure_ascii=False) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": 'attachment; filename="memstream-export.jsonl"'})

    @router.post("/users/{user:path}/import", response_model=Imported, status_code=201,
                 responses=error_responses(400, 401, 409, 413, 415, 503), summary="Import JSONL records into a user",
                 openapi_extra={"requestBody": {"required": True, "content": {"application/x-ndjson": {
                     "schema": {"type": "string", "description": "Lines as written by the export route"}}}}})
    async def import_user(request: Request, user: str = UserPath, idempotency_key: str | None = IdempotencyHeader):
        """All records are stored in one transaction: a bad line stores nothing. The body limit applies."""
        tenant = tenant_for(request)
        service = memory_service(request)
        internal = tenant.internal(user)
        raw = await request.body()
        records = parse_jsonl(raw)

        def answer(counts: dict) -> tuple[int, dict]:
            return 201, Imported(user=user, **counts).model_dump(mode="json")

        async def write(also):
            try:
                counts = await blocking(service.memory.import_records, internal, records, also=also)
            except ValueError as exc:
                raise APIError(400, str(exc), code="invalid_record") from None
            return answer(counts)

        async def replay(counts):
            return answer(counts)

        return await idempotent(request, tenant, idempotency_key, "import", internal, raw, write, replay)

    return router


def parse_jsonl(raw: bytes) -> list[dict]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"import body is not UTF-8: {exc}", code="invalid_jsonl") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise APIError(400, f"line {number} is not valid JSON: {exc}", code="invalid_jsonl") from None
        except RecursionError:
            raise APIError(400, f"line {number} is nested too deeply", code="invalid_jsonl") from None
        if not isinstance(record, dict):
            raise APIError(400, f"line {number}: expected a JSON object", code="invalid_jsonl")
        records.append(record)
    if not records:
        raise APIError(400, "import body has no records: send the lines of an export", code="invalid_jsonl")
    try:
        check_records(records)
    except ValueError as exc:
        raise APIError(400, str(exc), code="invalid_record") from None
    return records
