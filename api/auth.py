"""Bearer tokens on every /v1 call: who is calling (`caller()`), and what their role allows.

A token's check is remembered for IAAS_TOKEN_CACHE_S seconds per API process, so a call normally
costs a SHA-256 and a dictionary lookup rather than a database read; revocation takes effect within
that time, expiry on the very next call."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from cachetools import TTLCache
from flask import Blueprint, Flask, current_app, g, request

from api.runtime import runtime
from common.errors import Forbidden, Unauthenticated
from common.tokens import Caller, look_up, secret_hash

# Sent with every 401 (RFC 6750): the scheme the client must use.
WWW_AUTHENTICATE = 'Bearer realm="mini-iaas"'
_HOW = "Send 'Authorization: Bearer <token>'; an admin makes tokens with 'iaas-admin token create'."


class TokenCache:
    """Checked tokens by the hash of their secret (the secrets themselves are not kept in memory)."""

    def __init__(self, ttl_s: float) -> None:
        self._cache: TTLCache[str, Caller | None] | None = (
            TTLCache(maxsize=4096, ttl=ttl_s) if ttl_s else None
        )
        self._lock = threading.Lock()

    def caller(self, secret: str) -> Caller | None:
        if self._cache is None:
            return look_up(runtime().autocommit, secret)
        key = secret_hash(secret)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = look_up(runtime().autocommit, secret)
        with self._lock:
            self._cache[key] = found
        return found


def install(app: Flask, blueprints: list[Blueprint]) -> None:
    """Require a token on every route of `blueprints` (the open ones are simply not listed)."""
    app.extensions["iaas.tokens"] = TokenCache(app.extensions["iaas"].settings.token_cache_s)
    protected = frozenset(blueprint.name for blueprint in blueprints)

    @app.before_request
    def _authenticate() -> None:
        if request.blueprint in protected:
            authenticate()


def authenticate() -> None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated(f"This call needs a token. {_HOW}")
    if len(secret) > 256 or not secret.isascii():
        raise Unauthenticated(f"That is not a mini-iaas token. {_HOW}")
    found: Caller | None = current_app.extensions["iaas.tokens"].caller(secret)
    if found is None:
        raise Unauthenticated(f"The token is unknown or was revoked. {_HOW}")
    if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
        raise Unauthenticated(f"The token expired at {found.expires_at.isoformat()}. {_HOW}")
    g.caller = found


def caller() -> Caller:
    """The authenticated caller of this request (every /v1 view runs after `authenticate`)."""
    found: Caller = g.caller
    return found


def require_admin(what: str) -> Caller:
    who = caller()
    if not who.is_admin:
        raise Forbidden(f"{what} needs a token with the admin role; this token's role is {who.role}.")
    return who
