"""The signed-in session: tokens from the vault, sign-in, single-flight refresh.

:class:`Session` is the :class:`~tablesync.remote.base.TokenSource` the REST and Realtime
clients use. Rules (protocol doc section 3.4): the new refresh token is written to the vault
*before* the new access token is used; refreshes are serialised (one at a time, and a caller
whose expired token was already replaced gets the new one without a second refresh); after a
network failure the same refresh token is retried (GoTrue returns the active session for a
token reused within its window); a dead refresh token raises
:class:`~tablesync.remote.base.DeadSessionError` ("re-auth required").
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

from tablesync.clock import TimeSource
from tablesync.config import SupabaseConfig, SyncConfig
from tablesync.errors import AuthError, ConfigError
from tablesync.remote.base import DeadSessionError
from tablesync.vault import Secret, Tokens, Vault

DEFAULT_REFRESH_MARGIN = 90.0

__all__ = ["AuthClient", "Session", "login", "provision"]


class AuthClient(Protocol):
    def sign_in(self, email: str, password: Secret) -> Tokens: ...

    def refresh(self, refresh_token: Secret) -> Tokens: ...


class Session:
    """Current tokens for one project, persisted in ``vault``.

    Args:
        auth: the GoTrue client (``RestRemote``).
        vault: encrypted token store.
        project: the project URL (stored tokens of another project are ignored).
        email, password: for password sign-in (password from env/prompt only).
        refresh_margin: refresh when the token expires within this many seconds.
        clock: where "now" comes from when deciding a token is (nearly) expired: a
            :data:`~tablesync.clock.TimeSource`, ``time.time`` by default (tests share a
            :class:`~tablesync.clock.ManualClock` with the devserver).
        on_refresh: called with the new access token after every sign-in/refresh
            (the engine hands it to Realtime).
    """

    def __init__(self, auth: AuthClient, vault: Vault, *, project: str, email: str = "",
                 password: Secret | None = None,
                 refresh_margin: float = DEFAULT_REFRESH_MARGIN,
                 clock: TimeSource = time.time,
                 on_refresh: Callable[[Secret], None] | None = None) -> None:
        self.auth, self.vault, self.project = auth, vault, project.rstrip("/")
        self.email, self.password = email, password
        self.refresh_margin, self.clock, self.on_refresh = refresh_margin, clock, on_refresh
        self._lock = threading.RLock()
        self._tokens: Tokens | None = None
        self.foreign: str | None = None  # the project URL of stored tokens of another one

    def __repr__(self) -> str:
        return f"Session({self.project!r}, {self.email!r})"

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    # -- TokenSource

    def access_token(self) -> Secret | None:
        return self._tokens.access_token if self._tokens else None

    def refresh_expired(self, expired: Secret | None) -> Secret:
        with self._lock:
            current = self._tokens
            if current is not None and expired is not None and current.access_token != expired:
                return current.access_token
            return self.refresh().access_token

    # -- lifecycle

    def ensure(self) -> Tokens:
        """A valid session: stored tokens, refreshed if close to expiry, else sign in."""
        with self._lock:
            # the store first: `tablesync login` may have replaced dead tokens meanwhile
            tokens = self._stored() or self._tokens
            if tokens is not None:
                self._tokens = tokens
                if tokens.expires_in(self.clock()) > self.refresh_margin:
                    return tokens
                try:
                    return self.refresh()
                except DeadSessionError:
                    if not self.password:
                        raise
            return self.sign_in()

    def sign_in(self) -> Tokens:
        """Email/password sign-in; stores the tokens."""
        if not self.email or not self.password:
            if self.foreign:
                raise AuthError(self._not_signed_in(),
                                hint=f"tokens in {self.vault.path}")
            raise AuthError("not signed in and no email/password to sign in with",
                            hint="run `tablesync login` or set TABLESYNC_SUPABASE__PASSWORD")
        with self._lock:
            return self._keep(self.auth.sign_in(self.email, self.password))

    def refresh(self) -> Tokens:
        """Rotate the tokens now (raises DeadSessionError when the session is gone)."""
        with self._lock:
            current = self._tokens or self._stored()
            if current is None:
                if self.foreign:
                    raise DeadSessionError(self._not_signed_in(),
                                           hint=f"tokens in {self.vault.path}")
                raise DeadSessionError("no session to refresh", hint="run `tablesync login`")
            return self._keep(self.auth.refresh(current.refresh_token), current.user_id)

    def _stored(self) -> Tokens | None:
        tokens = self.vault.load()
        if tokens is None:
            return None
        if tokens.project.rstrip("/") != self.project:
            self.foreign = tokens.project.rstrip("/") or "an unknown project"
            return None
        self.foreign = None
        return tokens

    def _not_signed_in(self) -> str:
        """Why there is no session: tokens of another project, or none at all."""
        if self.foreign:
            return (f"stored tokens belong to {self.foreign}, this config points at "
                    f"{self.project}; run `tablesync login`")
        return "not signed in"

    def _keep(self, tokens: Tokens, user_id: str = "") -> Tokens:
        tokens = Tokens(tokens.access_token, tokens.refresh_token, tokens.expires_at,
                        tokens.user_id or user_id, self.project)
        self.vault.save(tokens)          # persist the rotated refresh token first
        self._tokens = tokens
        if self.on_refresh is not None:
            self.on_refresh(tokens.access_token)
        return tokens


def _supabase(config: SyncConfig) -> SupabaseConfig:
    if config.supabase is None:
        raise ConfigError("no [supabase] section: nothing to sign in to",
                          location=f"{config.source}: [supabase]",
                          hint="add url, anon_key and email (or TABLESYNC_SUPABASE__URL, ...)")
    return config.supabase


def login(config: SyncConfig, password: Secret, *, email: str | None = None) -> Tokens:
    """Sign in with email/password and store the tokens in the vault (``tablesync login``)."""
    from tablesync.remote.rest import RestRemote

    sb = _supabase(config)
    address = email or sb.email
    if not address:
        raise ConfigError("no email to sign in with", location=f"{config.source}: [supabase] email",
                          hint="set it in sync.toml or pass --email")
    vault = Vault(config.resolve_path(config.paths.token_store))
    with RestRemote(sb.url, sb.anon_key) as remote:
        return Session(remote, vault, project=sb.url, email=address, password=password).sign_in()


def provision(config: SyncConfig, *, system_id: str, email: str, password: Secret,
              service_key: Secret | None = None) -> dict[str, Any]:
    """Create a system's user with ``app_metadata.system_id`` (admin API, service key)."""
    from tablesync.remote.rest import RestRemote

    sb = _supabase(config)
    key = service_key or (Secret(sb.service_key.get_secret_value()) if sb.service_key else None)
    if not key:
        raise ConfigError("the service-role key is needed to create users",
                          location=f"{config.source}: [supabase] service_key",
                          hint="set TABLESYNC_SUPABASE__SERVICE_KEY in the environment")
    with RestRemote(sb.url, sb.anon_key) as remote:
        return remote.admin_create_user(key, email, password, {"system_id": system_id})
