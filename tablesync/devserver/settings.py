"""Devserver settings: where PostgreSQL lives, the JWT secret, the API keys, the port, and
the hosted-Supabase behaviours each flag turns on or off (docs/devserver.md, "Hosted
behaviours").

The JWT secret (and the ES256 signing key) are random per data directory and persisted
(mode 0600) next to the PostgreSQL cluster, so a restarted devserver keeps issuing/accepting
the same keys.

``clock`` is where auth reads the time (token ``iat``/``exp``, their checks in the gateway,
auth and Realtime, the refresh-token reuse window): ``time.time`` unless a test injects one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tablesync.devserver import jwt

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 54321
DEFAULT_JWT_EXP = 3600
DEFAULT_REFRESH_REUSE_INTERVAL = 10
DEFAULT_MAX_ROWS = 1000
DEFAULT_STATEMENT_TIMEOUT = 8.0       # hosted: role authenticated, statement_timeout 8s
DEFAULT_ANON_STATEMENT_TIMEOUT = 3.0  # hosted: role anon, statement_timeout 3s
DEFAULT_REALTIME_RATE_LIMIT = 100     # hosted free plan: 100 messages per second
DEFAULT_REALTIME_MAX_PAYLOAD_KB = 256  # hosted free plan's broadcast payload limit
DEFAULT_REFRESH_LOCK_TIMEOUT = 5.0    # GoTrue's retryLoopDuration before 409 conflict
JWT_SIGNING = ("hs256", "asymmetric")
SECRET_FILE = "jwt_secret"
SIGNING_KEY_FILE = "jwt_signing_key.pem"
KEY_IAT = 1641769200      # fixed, so a data dir's keys stay the same across restarts
KEY_EXP = 4102444800      # 2100-01-01

Clock = Callable[[], float]
"""Unix seconds, like ``time.time`` (the devserver's own type: it imports no tablesync)."""


def api_key(role: str, secret: str) -> str:
    """A Supabase legacy API key: an HS256 JWT with ``role`` (anon / service_role)."""
    claims = {"iss": "supabase-demo", "role": role, "iat": KEY_IAT, "exp": KEY_EXP}
    return jwt.encode(claims, secret)


def new_api_key(kind: str, secret: str) -> str:
    """A Supabase new-style API key (``sb_publishable_...`` / ``sb_secret_...``), derived
    from the project secret so a data directory keeps its keys across restarts."""
    digest = hmac.new(secret.encode(), f"tablesync-{kind}".encode(), hashlib.sha256)
    return f"sb_{kind}_{digest.hexdigest()[:32]}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_or_create_signing_key(data_dir: Path) -> jwt.SigningKey:
    """Read the per-data-dir ES256 signing key, creating it (0600) on first use."""
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        return jwt.SigningKey.from_pem(path.read_bytes())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = jwt.SigningKey.generate()
    _write_private(path, key.pem())
    return key


def load_or_create_secret(data_dir: Path) -> str:
    """Read the per-data-dir JWT secret, creating it (0600) on first use."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


@dataclass
class Settings:
    """Everything the HTTP app needs. Build with :meth:`create` for fresh keys."""

    dsn: str
    jwt_secret: str
    anon_key: str
    service_key: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    jwt_exp: int = DEFAULT_JWT_EXP
    refresh_reuse_interval: int = DEFAULT_REFRESH_REUSE_INTERVAL
    # GoTrue returns the active token for its revoked parent at any age; False limits that
    # to refresh_reuse_interval too (a stricter reading of the rule).
    parent_reuse_any_age: bool = True
    max_rows: int = DEFAULT_MAX_ROWS
    jwt_expired_code: str = "PGRST303"
    enable_faults: bool = False
    pool_max: int = 8
    clock: Clock = field(default=time.time, compare=False)
    # hosted behaviours (docs/devserver.md, "Hosted behaviours"); 0 disables a limit
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    anon_statement_timeout: float = DEFAULT_ANON_STATEMENT_TIMEOUT
    toast_omission: bool = True
    realtime_rate_limit: int = DEFAULT_REALTIME_RATE_LIMIT
    private_only_channels: bool = False
    realtime_max_payload_kb: int = DEFAULT_REALTIME_MAX_PAYLOAD_KB
    refresh_lock_timeout: float = DEFAULT_REFRESH_LOCK_TIMEOUT
    jwt_signing: str = "hs256"
    signing_key: jwt.SigningKey | None = field(default=None, repr=False)
    publishable_key: str = ""
    secret_key: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, dsn: str, jwt_secret: str, **kwargs: object) -> "Settings":
        """Settings with anon / service_role keys signed by ``jwt_secret``, the new-style
        keys derived from it, and (``jwt_signing="asymmetric"``) an ES256 signing key."""
        settings = cls(dsn=dsn, jwt_secret=jwt_secret, anon_key=api_key("anon", jwt_secret),
                       service_key=api_key("service_role", jwt_secret),
                       publishable_key=new_api_key("publishable", jwt_secret),
                       secret_key=new_api_key("secret", jwt_secret),
                       **kwargs)  # type: ignore[arg-type]
        if settings.jwt_signing not in JWT_SIGNING:
            raise ValueError(f"jwt_signing must be one of {', '.join(JWT_SIGNING)}")
        if settings.jwt_signing == "asymmetric" and settings.signing_key is None:
            settings.signing_key = jwt.SigningKey.generate()
        return settings

    # -- tokens -------------------------------------------------------------------
    @property
    def issuing_key(self) -> jwt.SigningKey | None:
        """The key access tokens are signed with (None: the HS256 secret)."""
        return self.signing_key if self.jwt_signing == "asymmetric" else None

    def sign(self, claims: dict[str, Any]) -> str:
        """An access token as GoTrue issues it (ES256 with ``kid``, or HS256)."""
        return jwt.encode(dict(claims), self.jwt_secret, self.issuing_key)

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a token signed with the secret or the signing key (raises JWTError)."""
        return jwt.decode(token, self.jwt_secret, now=self.clock(), key=self.signing_key)

    def legacy_key(self, key: str) -> str | None:
        """The legacy JWT key a new-style key stands for (the gateway's translation)."""
        if key and hmac.compare_digest(key, self.publishable_key):
            return self.anon_key
        if key and hmac.compare_digest(key, self.secret_key):
            return self.service_key
        return None

    @property
    def api_keys(self) -> tuple[str, ...]:
        return (self.anon_key, self.service_key, self.publishable_key, self.secret_key)

    def jwks(self) -> dict[str, object]:
        """GoTrue's JWKS: the public signing key (none with HS256 only)."""
        return {"keys": [self.signing_key.public_jwk()] if self.signing_key else []}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:  # never show the secret or keys
        return f"Settings(url={self.url!r}, jwt_exp={self.jwt_exp})"
