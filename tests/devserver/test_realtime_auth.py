"""Realtime's token checks and messages, and the gateway's ``exp`` rule (pure)."""

from __future__ import annotations

import pytest

from tablesync.devserver import jwt
from tablesync.devserver.realtime_auth import TokenRefused, verify

SECRET = "s" * 40
NOW = 1_800_000_000


def _tok(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret)


def test_accepts_supabase_shaped_token() -> None:
    claims = {"role": "authenticated", "exp": NOW + 10, "iat": NOW, "sub": "u"}
    assert verify(_tok(claims), SECRET, now=NOW) == claims


@pytest.mark.parametrize("token, reason, join_reason", [
    (_tok({"role": "a", "exp": NOW - 300}), "expired_token",
     "InvalidJWTToken: Token has expired 300 seconds ago"),
    (_tok({"role": "a", "exp": NOW}), "expired_token",
     "InvalidJWTToken: Token has expired 0 seconds ago"),
    (_tok({"role": "a", "exp": NOW + 5}, "wrong"), "signature_error",
     "JwtSignatureError: Failed to validate JWT signature"),
    (_tok({"exp": NOW + 5}), "missing_claims",
     "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
    (_tok({"role": "a"}), "missing_claims",
     "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
    ("a.b", "token_malformed", "MalformedJWT: The token provided is not a valid JWT"),
    ("e30.e30.", "error_generating_signer",
     "JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS"
     " configuration"),
])
def test_refusals(token: str, reason: str, join_reason: str) -> None:
    with pytest.raises(TokenRefused) as info:
        verify(token, SECRET, now=NOW)
    assert info.value.reason == reason
    assert info.value.join_reason == join_reason
    assert info.value.handshake_status == 401


def test_whitespace_is_ignored_and_non_strings_are_missing_keys() -> None:
    tok = _tok({"role": "a", "exp": NOW + 5})
    assert verify(f" {tok[:10]}\n{tok[10:]} ", SECRET, now=NOW)["role"] == "a"
    with pytest.raises(TokenRefused) as info:
        verify(None, SECRET, now=NOW)
    assert info.value.handshake_message == "API key is missing"


def test_gateway_jwt_checks_exp_against_the_given_time() -> None:
    tok = jwt.encode({"role": "a", "exp": NOW}, SECRET)
    assert jwt.decode(tok, SECRET, now=NOW - 0.5)["exp"] == NOW
    for now in (NOW, NOW + 300):                    # PyJWT's rule: expired once exp <= now
        with pytest.raises(jwt.JWTError) as info:
            jwt.decode(tok, SECRET, now=now)
        assert info.value.expired and info.value.code == "PGRST303"
    assert jwt.decode(tok, SECRET, now=NOW, leeway=1)["role"] == "a"
    with pytest.raises(jwt.JWTError) as info:
        jwt.decode(jwt.encode({"role": "a", "exp": "soon"}, SECRET), SECRET, now=0)
    assert not info.value.expired and str(info.value) == "JWT cryptographic operation failed"
