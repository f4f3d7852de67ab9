"""HS256 JSON Web Tokens, as Supabase signs them (stdlib only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from tablesync.errors import AuthError


class JWTError(AuthError):
    """A token that is malformed, wrongly signed or expired (``expired`` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message, status=401, code="PGRST303" if expired else "PGRST301")
        self.expired = expired


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + pad)


def encode(claims: dict[str, Any], secret: str) -> str:
    """Sign ``claims`` with HS256."""
    header = _b64e(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64e(json.dumps(claims, separators=(",", ":")).encode())
    signing = f"{header}.{body}".encode("ascii")
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64e(sig)}"


def decode(token: str, secret: str, *, now: float | None = None, leeway: float = 0) -> dict[str, Any]:
    """Verify an HS256 token and return its claims; raise :class:`JWTError` otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError(f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        header = json.loads(_b64d(parts[0]))
        claims = json.loads(_b64d(parts[1]))
        sig = _b64d(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise JWTError("JWT cryptographic operation failed") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JWTError("JWT cryptographic operation failed")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"),
                        hashlib.sha256).digest()
    if not hmac.compare_digest(sig, expected):
        raise JWTError("JWT cryptographic operation failed")
    if not isinstance(claims, dict):
        raise JWTError("JWT cryptographic operation failed")
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)):
            raise JWTError("JWT cryptographic operation failed")
        if (time.time() if now is None else now) >= exp + leeway:
            raise JWTError("JWT expired", expired=True)
    return claims
