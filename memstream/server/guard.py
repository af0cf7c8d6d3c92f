"""Checks every request passes before any route runs: Host allowlist, content types, per-key rate limit.

A keyless server (loopback only) trusts whoever can reach it, and a web page the user visits can
reach it too: through the browser (a cross-origin "simple" request: POST with text/plain, form
data) or through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1). So on a
keyless server
- the Host header must name the server (server.allowed_hosts; default: localhost, 127.0.0.1, ::1):
  a rebound name is refused (400), and
- a state-changing request (POST, PUT, PATCH, DELETE with a body) must declare a JSON or NDJSON
  Content-Type (415 otherwise): a browser sends those cross-origin only after a CORS preflight, which
  this server never grants.
A server with API keys checks Host only when server.allowed_hosts is set.

The rate limit (server.rate_limit_per_minute) is a token bucket per API key (tenant), or per client
address for requests without a valid key, over the /v1 routes; past it: 429 with Retry-After.
"""

from __future__ import annotations

import hmac
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from memstream.config import ServerSettings
from memstream.server.errors import APIError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson", "application/jsonl",
              "application/jsonlines", "application/json-lines")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class RateLimiter:
    """Token buckets: `per_minute` requests a minute per key, bursts up to `per_minute`."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when the request may go; otherwise the seconds until one token is back."""
        now = self.clock()
        tokens, at = self.buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.refill_per_s)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > 100_000:  # forget full buckets: an address scan must not grow memory without bound
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] < self.capacity}
        return (1.0 - tokens) / self.refill_per_s


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: ServerSettings):
        self.app = app
        self.api_keys = settings.api_keys
        self.keyless = not settings.api_keys
        names = settings.allowed_hosts if settings.allowed_hosts is not None else (LOOPBACK_NAMES if self.keyless else None)
        self.hosts = None if names is None else {host_name(n) for n in names}
        self.limiter = RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        error = self.check(scope, headers)
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: dict[bytes, bytes]) -> APIError | None:
        if self.hosts is not None and "*" not in self.hosts:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.hosts:
                return APIError(400, f"Host {host!r} is not served here (server.allowed_hosts: {', '.join(sorted(self.hosts))})",
                                param="Host", code="invalid_host")
        if self.keyless and scope["method"] in STATE_CHANGING and self._has_body(scope["method"], headers):
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if not json_media_type(content_type):
                return APIError(415, f"Content-Type {content_type or '(none)'!r} is not accepted: send application/json "
                                     "(or application/x-ndjson for an import)", param="Content-Type",
                                code="unsupported_media_type")
        if self.limiter is not None and scope["path"].startswith("/v1/"):
            wait = self.limiter.take(self._key(scope, headers))
            if wait > 0:
                return APIError(429, "rate limit reached for this API key (server.rate_limit_per_minute); retry later",
                                code="rate_limit_exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    @staticmethod
    def _has_body(method: str, headers: dict[bytes, bytes]) -> bool:
        if method != "DELETE":
            return True  # a POST without a body is still a write; it needs the type too
        length = headers.get(b"content-length", b"0")
        return b"transfer-encoding" in headers or length.strip() not in (b"", b"0")

    def _key(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token:
            tenant = None
            for key, name in self.api_keys.items():  # constant time per key, as auth.py
                if hmac.compare_digest(token.strip().encode(), key.encode()):
                    tenant = name
            if tenant is not None:
                return f"tenant:{tenant}"
        client = scope.get("client")
        return f"client:{client[0] if client else '-'}"
