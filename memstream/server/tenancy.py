"""Tenants: every API key belongs to one, and a key sees only its tenant's memory users.

The store has one flat user namespace, so a tenant's users are stored as `<tenant>/<user>`.
Clients never see the prefix: they name `alice`, the store holds `acme/alice`, and another
tenant's `alice` is a different row set. A server without keys (loopback only) has no tenant
and uses the names as given, so it shares memory with `memstream chat` on the same database.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from memstream.config import ConfigError
from memstream.memory.store import MAX_ID_LENGTH, check_id
from memstream.server.auth import check_api_key
from memstream.server.errors import APIError

SEPARATOR = "/"
MAX_TENANT_CHARS = 64
MAX_USER_CHARS = 128
"""The user id limit clients see, on every server: room for the longest tenant prefix within the store's limit."""
assert MAX_TENANT_CHARS + len(SEPARATOR) + MAX_USER_CHARS <= MAX_ID_LENGTH


def check_tenants(api_keys: dict[str, str]) -> None:
    """Tenant names must be non-empty and free of the separator, or two tenants could share users."""
    for key, tenant in api_keys.items():
        if not key.strip():
            raise ConfigError("server.api_keys has an empty key")
        if not tenant or SEPARATOR in tenant or not tenant.strip():
            raise ConfigError(f"server.api_keys: tenant name {tenant!r} must be non-empty and contain no {SEPARATOR!r}")
        if len(tenant) > MAX_TENANT_CHARS:
            raise ConfigError(f"server.api_keys: tenant name {tenant[:20]!r}... is longer than {MAX_TENANT_CHARS} characters")


@dataclass(frozen=True)
class Tenant:
    """Who is calling: a tenant name, or None on a keyless (loopback) server."""

    name: str | None

    def internal(self, user: str) -> str:
        """The store's id for the client's user name; 400 when the name is unusable."""
        try:
            check_id("user", user)
            if len(user) > MAX_USER_CHARS:
                raise ValueError(f"user is longer than {MAX_USER_CHARS} characters")
        except ValueError as exc:
            raise APIError(400, str(exc), param="user", code="invalid_user") from None
        return user if self.name is None else f"{self.name}{SEPARATOR}{user}"

    def external(self, internal: str) -> str:
        if self.name is None:
            return internal
        prefix = f"{self.name}{SEPARATOR}"
        assert internal.startswith(prefix), f"user {internal!r} is not in tenant {self.name!r}"
        return internal[len(prefix):]

    def owns(self, internal: str) -> bool:
        return self.name is None or internal.startswith(f"{self.name}{SEPARATOR}")


def tenant_for(request: Request) -> Tenant:
    """Check the bearer key (401 when wrong) and return its tenant."""
    return Tenant(check_api_key(request, request.app.state.settings.server.api_keys))


def rate_key(request: Request, tenant: str | None) -> str:
    """Whose share a request counts against: its API key's tenant, or (keyless server) the client address."""
    if tenant is not None:
        return f"tenant:{tenant}"
    return f"client:{request.client.host if request.client else '-'}"
