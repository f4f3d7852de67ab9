"""HS256 JSON Web Tokens, as Supabase signs them (through PyJWT).

Only the signature, the algorithm and ``exp`` are checked, as PostgREST and GoTrue do for
the devserver's purposes: ``aud``, ``iss``, ``iat``, ``nbf``, ``sub`` and ``jti`` are
claims, not checks. The messages are PostgREST's. ``exp`` is checked here, against the
caller's clock (PyJWT's own check would read the machine's), the way PyJWT does it.
"""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt

from tablesync.devserver.errors import TokenError

ALGORITHM = "HS256"
_FAILED = "JWT cryptographic operation failed"
_CLAIMS_ONLY = {"verify_exp": False, "verify_aud": False, "verify_iss": False, "verify_iat": False,
                "verify_nbf": False, "verify_sub": False, "verify_jti": False,
                "require": []}


class JWTError(TokenError):
    """A token that is malformed, wrongly signed or expired (``expired`` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message, status=401, code="PGRST303" if expired else "PGRST301")
        self.expired = expired


def encode(claims: dict[str, Any], secret: str) -> str:
    """Sign ``claims`` with HS256."""
    return pyjwt.encode(claims, secret, algorithm=ALGORITHM)


def decode(token: str, secret: str, *, leeway: float = 0,
           now: float | None = None) -> dict[str, Any]:
    """Verify an HS256 token and return its claims; raise :class:`JWTError` otherwise.

    ``now`` (Unix seconds, default the machine's time) is what ``exp`` is compared with.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError(f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        claims = pyjwt.decode(token, secret, algorithms=[ALGORITHM], leeway=leeway,
                              options=_CLAIMS_ONLY)  # type: ignore[arg-type]
    except pyjwt.ExpiredSignatureError as exc:
        raise JWTError("JWT expired", expired=True) from exc
    except pyjwt.PyJWTError as exc:
        raise JWTError(_FAILED) from exc
    if not isinstance(claims, dict):
        raise JWTError(_FAILED)
    if "exp" in claims:
        _check_exp(claims["exp"], time.time() if now is None else now, leeway)
    return claims


def _check_exp(value: Any, now: float, leeway: float) -> None:
    """PyJWT's ``exp`` rule: an integer (``int()`` of it), expired once ``exp <= now``."""
    try:
        exp = int(value)
    except (ValueError, TypeError, OverflowError):
        raise JWTError(_FAILED) from None
    if exp <= now - leeway:
        raise JWTError("JWT expired", expired=True)
