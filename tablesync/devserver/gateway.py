"""The API gateway in front of every service: ``apikey`` check and Bearer JWT -> caller."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from tablesync.devserver import jwt
from tablesync.devserver.errors import BAD_API_KEY, NO_API_KEY, gateway_error, jwt_failure
from tablesync.devserver.settings import Settings

ANON_ROLE = "anon"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the database role to assume and the JWT claims (role included)."""

    role: str
    claims: dict[str, Any]
    token: str


def require_apikey(conn: HTTPConnection, settings: Settings) -> str:
    """The request's ``apikey`` (header or query param); 401 if absent or unknown.

    A new-style key (``sb_publishable_...`` / ``sb_secret_...``) is accepted and returned as
    the legacy JWT key of its role (anon / service_role), as the hosted gateway does."""
    key = conn.headers.get("apikey") or conn.query_params.get("apikey")
    if not key:
        raise gateway_error(*NO_API_KEY)
    if not any(hmac.compare_digest(key, k) for k in settings.api_keys if k):
        raise gateway_error(*BAD_API_KEY)
    return settings.legacy_key(key) or key


def bearer(conn: HTTPConnection) -> str | None:
    """The Bearer token of the Authorization header, if any."""
    value = conn.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def caller(conn: HTTPConnection, settings: Settings) -> Caller:
    """Check ``apikey``, then verify the Bearer JWT (or the apikey itself when absent)."""
    key = require_apikey(conn, settings)
    token = bearer(conn) or key
    token = settings.legacy_key(token) or token
    try:
        claims = settings.verify(token)
    except jwt.JWTError as exc:
        raise jwt_failure(str(exc), expired=exc.expired,
                          expired_code=settings.jwt_expired_code) from exc
    role = claims.get("role") if isinstance(claims.get("role"), str) else None
    role = role or ANON_ROLE
    return Caller(role=role, claims={**claims, "role": role}, token=token)
