"""Devserver settings: where PostgreSQL lives, the JWT secret, the API keys, the port.

The JWT secret is random per data directory and persisted (mode 0600) next to the
PostgreSQL cluster, so a restarted devserver keeps issuing/accepting the same keys.

``clock`` is where auth reads the time (token ``iat``/``exp``, their checks in the gateway,
auth and Realtime, the refresh-token reuse window): ``time.time`` unless a test injects one.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tablesync.devserver import jwt

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 54321
DEFAULT_JWT_EXP = 3600
DEFAULT_REFRESH_REUSE_INTERVAL = 10
DEFAULT_MAX_ROWS = 1000
SECRET_FILE = "jwt_secret"
KEY_IAT = 1641769200      # fixed, so a data dir's keys stay the same across restarts
KEY_EXP = 4102444800      # 2100-01-01

Clock = Callable[[], float]
"""Unix seconds, like ``time.time`` (the devserver's own type: it imports no tablesync)."""


def api_key(role: str, secret: str) -> str:
    """A Supabase legacy API key: an HS256 JWT with ``role`` (anon / service_role)."""
    claims = {"iss": "supabase-demo", "role": role, "iat": KEY_IAT, "exp": KEY_EXP}
    return jwt.encode(claims, secret)


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
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, dsn: str, jwt_secret: str, **kwargs: object) -> "Settings":
        """Settings with anon / service_role keys signed by ``jwt_secret``."""
        return cls(dsn=dsn, jwt_secret=jwt_secret, anon_key=api_key("anon", jwt_secret),
                   service_key=api_key("service_role", jwt_secret), **kwargs)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:  # never show the secret or keys
        return f"Settings(url={self.url!r}, jwt_exp={self.jwt_exp})"
