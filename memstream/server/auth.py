"""Bearer-key check shared by every route that needs it."""

from __future__ import annotations

import hmac

from fastapi import Request

from memstream.server.errors import APIError


def check_api_key(request: Request, api_keys: dict[str, str]) -> str | None:
    """The tenant for the request's bearer key; None when the server has no keys (loopback only).

    Every configured key is compared in constant time, so timing reveals neither a key nor which one matched.
    """
    if not api_keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    tenant = None
    for key, name in api_keys.items():
        if hmac.compare_digest(token.strip().encode(), key.encode()):
            tenant = name
    if tenant is None:
        raise APIError(401, "invalid API key", code="invalid_api_key")
    return tenant
