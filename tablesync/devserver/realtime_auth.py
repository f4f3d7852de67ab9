"""Token checks with Supabase Realtime's outcomes and messages (pure, no I/O).

Mirrors ``RealtimeWeb.JwtVerification`` + ``ChannelsAuthorization.authorize_conn``: HS* signature
with the project secret (or ES256 with the project's JWKS key when it has one), ``exp``
strictly in the future, ``iat`` numeric if present, ``role`` and ``exp`` required.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt as pyjwt

from tablesync.devserver.errors import TokenError
from tablesync.devserver.jwt import ASYMMETRIC_ALGORITHM, SigningKey

_ALGORITHMS = ("HS256", "HS384", "HS512")

# reason -> (join error code, message, HTTP status at the handshake, handshake message)
_REASONS: dict[str, tuple[str, str, int, str]] = {
    "missing_api_key": ("MissingAPIKey", "API key is missing or not a valid string", 401,
                        "API key is missing"),
    "token_malformed": ("MalformedJWT", "The token provided is not a valid JWT", 401,
                        "The token provided is not a valid JWT"),
    "signature_error": ("JwtSignatureError", "Failed to validate JWT signature", 401,
                        "Failed to validate JWT signature"),
    "error_generating_signer": (
        "JwtSignerError",
        "Failed to generate JWT signer, check your JWT secret or JWKS configuration", 401,
        "Failed to generate JWT signer, check your JWT secret or JWKS configuration"),
    "missing_claims": ("InvalidJWTToken", "Fields `role` and `exp` are required in JWT", 401,
                       "Fields `role` and `exp` are required in JWT"),
    "expired_token": ("InvalidJWTToken", "Token has expired", 401, "Token has expired"),
    "invalid_claims": ("UnknownErrorOnChannel", "Unknown Error on Channel", 500,
                       "Error connecting to Realtime"),
}


class TokenRefused(TokenError):
    """A token Realtime refuses; ``reason`` is Supabase's atom, ``message`` its text."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        code, default, status, handshake = _REASONS[reason]
        self.reason = reason
        self.error_code = code
        self.text = message or default
        self.handshake_status = status
        self.handshake_message = handshake
        super().__init__(f"Realtime refused the token: {self.text}", status=status, code=code)

    @property
    def shutdown_message(self) -> str:
        """The ``system`` error text when a live channel's token is refused.

        Realtime words expiry, malformed tokens and missing claims; other refusals reach the
        client as the inspected Elixir atom (``:signature_error``).
        """
        if self.reason in ("signature_error", "error_generating_signer"):
            return f":{self.reason}"
        return self.text

    @property
    def join_reason(self) -> str:
        """The ``reason`` of a join error reply (bare text for the unknown error)."""
        if self.error_code == "UnknownErrorOnChannel":
            return "Unknown Error on Channel"
        return f"{self.error_code}: {self.text}"


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, unverified (Realtime calls a token it cannot read malformed)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused("token_malformed")
    try:
        header, claims = json.loads(_b64d(parts[0])), json.loads(_b64d(parts[1]))
        _b64d(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenRefused("token_malformed") from exc
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise TokenRefused("token_malformed")
    return header, claims


def _check_signature(token: str, secret: Any, alg: str) -> None:
    """The signature only (PyJWT); the claims are Realtime's checks, below."""
    try:
        pyjwt.decode(token, secret, algorithms=[alg], options={"verify_signature": True,
                     "verify_exp": False, "verify_aud": False, "verify_iss": False,
                     "verify_iat": False, "verify_nbf": False, "verify_sub": False,
                     "verify_jti": False, "require": []})
    except pyjwt.InvalidSignatureError as exc:
        raise TokenRefused("signature_error") from exc
    except pyjwt.PyJWTError as exc:
        raise TokenRefused("token_malformed") from exc


def verify(token: Any, secret: str, *, now: float | None = None,
           key: SigningKey | None = None) -> dict[str, Any]:
    """Return the claims of a token Realtime accepts; raise :class:`TokenRefused` otherwise.

    ``key``: the project's asymmetric signing key (its JWKS), for ES256 tokens."""
    if not isinstance(token, str):
        raise TokenRefused("missing_api_key")
    token = "".join(token.split())
    header, claims = _peek(token)
    alg = str(header.get("alg"))
    if alg == ASYMMETRIC_ALGORITHM and key is not None:
        if header.get("kid") not in (None, key.kid):
            raise TokenRefused("error_generating_signer")
        _check_signature(token, key.public_key, alg)
    elif alg not in _ALGORITHMS:
        raise TokenRefused("error_generating_signer")
    else:
        _check_signature(token, secret, alg)
    current = int(time.time() if now is None else now)
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or not exp > current:
            ago = current - int(round(exp)) if isinstance(exp, (int, float)) else 0
            raise TokenRefused("expired_token", f"Token has expired {ago} seconds ago")
    iat = claims.get("iat")
    if iat is not None and (not isinstance(iat, (int, float)) or isinstance(iat, bool)):
        raise TokenRefused("invalid_claims")
    if "role" not in claims or "exp" not in claims:
        raise TokenRefused("missing_claims")
    return claims


def seconds_left(claims: dict[str, Any], *, now: float | None = None) -> float:
    """Seconds until ``exp`` (may be negative)."""
    return float(claims["exp"]) - (time.time() if now is None else now)
