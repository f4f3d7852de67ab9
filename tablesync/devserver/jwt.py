"""JSON Web Tokens, as Supabase signs them (through PyJWT).

Two signing systems, as hosted projects have: the legacy shared secret (HS256) and an
asymmetric signing key (ES256, P-256) whose public half GoTrue publishes as a JWKS at
``/auth/v1/.well-known/jwks.json``. Verification accepts both: HS256 with the secret (the
legacy API keys stay HS256), ES256 with the public key named by the token's ``kid``.

Only the signature, the algorithm and ``exp`` are checked, as PostgREST and GoTrue do for
the devserver's purposes: ``aud``, ``iss``, ``iat``, ``nbf``, ``sub`` and ``jti`` are
claims, not checks. The messages are PostgREST's. ``exp`` is checked here, against the
caller's clock (PyJWT's own check would read the machine's), the way PyJWT does it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tablesync.devserver.errors import TokenError

ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHM = "ES256"
_FAILED = "JWT cryptographic operation failed"
_CLAIMS_ONLY = {"verify_exp": False, "verify_aud": False, "verify_iss": False, "verify_iat": False,
                "verify_nbf": False, "verify_sub": False, "verify_jti": False,
                "require": []}


class JWTError(TokenError):
    """A token that is malformed, wrongly signed or expired (``expired`` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message, status=401, code="PGRST303" if expired else "PGRST301")
        self.expired = expired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An ES256 (P-256) key pair with a stable ``kid`` (derived from the public key)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        numbers = self.public_key.public_numbers()
        self._x = numbers.x.to_bytes(32, "big")
        self._y = numbers.y.to_bytes(32, "big")
        self.kid = hashlib.sha256(self._x + self._y).hexdigest()[:32]

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> "SigningKey":
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key is not an elliptic-curve key")
        return cls(key)

    def pem(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def public_jwk(self) -> dict[str, Any]:
        """The public key as GoTrue lists it in its JWKS."""
        return {"kty": "EC", "crv": "P-256", "x": _b64(self._x), "y": _b64(self._y),
                "kid": self.kid, "alg": ASYMMETRIC_ALGORITHM, "use": "sig",
                "key_ops": ["verify"], "ext": True}

    def __repr__(self) -> str:  # never the private key
        return f"SigningKey(kid={self.kid!r})"


def encode(claims: dict[str, Any], secret: str, key: SigningKey | None = None) -> str:
    """Sign ``claims`` with ``key`` (ES256, header ``kid``) or else HS256 with ``secret``."""
    if key is not None:
        return pyjwt.encode(claims, key.private_key, algorithm=ASYMMETRIC_ALGORITHM,
                            headers={"kid": key.kid})
    return pyjwt.encode(claims, secret, algorithm=ALGORITHM)


def decode(token: str, secret: str, *, leeway: float = 0,
           now: float | None = None, key: SigningKey | None = None) -> dict[str, Any]:
    """Verify a token (HS256 with ``secret``; ES256 with ``key`` when given) and return its
    claims; raise :class:`JWTError` otherwise. ``now`` (Unix seconds, default the
    machine's time) is what ``exp`` is compared with."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError(f"Expected 3 parts in JWT; got {len(parts)}")
    verifier: Any = secret
    algorithm = ALGORITHM
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError as exc:
        raise JWTError(_FAILED) from exc
    if header.get("alg") == ASYMMETRIC_ALGORITHM:
        if key is None or header.get("kid") not in (None, key.kid):
            raise JWTError(_FAILED)
        verifier, algorithm = key.public_key, ASYMMETRIC_ALGORITHM
    try:
        claims = pyjwt.decode(token, verifier, algorithms=[algorithm], leeway=leeway,
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
