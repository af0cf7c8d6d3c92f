"""`memstream mcp --transport http`: the MCP server over streamable HTTP, behind the HTTP server's API keys.

Every request's bearer key is checked with the server's own helper (`memstream.server.auth`):
401 without a valid key, and the key's tenant is put in the request's ASGI state. The tools then
serve the configured user inside that tenant (`memstream.server.tenancy.Tenant.internal`), so an
MCP client and a REST client holding the same key see the same memories, and another tenant's
key can never reach them. Without keys the server binds only to loopback (the HTTP server's rule).
"""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from memstream.config import Settings
from memstream.server.app import check_bind
from memstream.server.auth import check_api_key
from memstream.server.errors import APIError
from memstream.server.tenancy import Tenant, check_tenants

TENANT_STATE = "memstream_tenant"


class TenantAuth:
    """ASGI middleware: a valid bearer key or 401; the key's Tenant goes into scope["state"]."""

    def __init__(self, app: ASGIApp, api_keys: dict[str, str]):
        check_tenants(api_keys)
        self.app = app
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan: starts the SDK's session manager
            return
        try:
            tenant = Tenant(check_api_key(Request(scope), self.api_keys))
        except APIError as exc:
            await exc.response()(scope, receive, send)
            return
        scope.setdefault("state", {})[TENANT_STATE] = tenant
        await self.app(scope, receive, send)


def http_user_for(user: str):
    """`user_for` for HTTP: the configured user inside the calling key's tenant."""

    def user_for(ctx: Context) -> str:
        request = ctx.request_context.request
        tenant = request.scope.get("state", {}).get(TENANT_STATE) if request is not None else None
        if tenant is None:  # only TenantAuth-wrapped apps are served, so this is a wiring bug
            raise ToolError("no authenticated tenant for this request")
        try:
            return tenant.internal(user)
        except APIError as exc:
            raise ToolError(exc.message) from None

    return user_for


def http_app(server, settings: Settings, host: str):
    """The ASGI app: the SDK's streamable HTTP app (stateless, JSON responses) behind TenantAuth."""
    check_bind(settings, host)
    app = server.streamable_http_app(streamable_http_path=settings.mcp.path, stateless_http=True, json_response=True, host=host)
    return TenantAuth(app, settings.server.api_keys)
