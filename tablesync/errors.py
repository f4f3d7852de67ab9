"""tablesync's exception tree.

::

    TablesyncError
    ├── ConfigError          sync.toml / schemas/*.sql problems (carries ``location``)
    ├── GenerateError        SQL generation or migration cannot be done safely
    ├── StoreError           local SQLite problems
    ├── RemoteError          talking to Supabase / the devserver
    │   ├── AuthError        bad credentials, dead refresh token ("re-auth required")
    │   ├── TransientRemoteError   network failure, 5xx, 429 (``retry_after``)
    │   └── PayloadError     a malformed or oversized remote payload
    ├── ConflictError        the conflict rule was asked something it cannot answer
    └── VaultError           the encrypted token store cannot be read or written

Every message is meant to be shown to a user as one line: it says what is wrong and,
where it can, where (file, table, key) and what to do.
"""

from __future__ import annotations


class TablesyncError(Exception):
    """Base of every error tablesync raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigError(TablesyncError):
    """Invalid configuration; ``location`` names the file, table and key."""

    def __init__(self, message: str, *, location: str = "", hint: str | None = None) -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message, hint=hint)


class GenerateError(TablesyncError):
    """Generated SQL cannot be produced or a migration cannot be done without loss."""


class StoreError(TablesyncError):
    """The local SQLite store failed or holds something unexpected."""


class RemoteError(TablesyncError):
    """The remote (Supabase or the devserver) refused or failed a request."""

    is_transient = False

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class AuthError(RemoteError):
    """Authentication failed; the user must sign in again (``tablesync login``)."""


class TransientRemoteError(RemoteError):
    """A failure worth retrying: network error, 5xx, 429 (``retry_after`` seconds if known)."""

    is_transient = True

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None,
        retry_after: float | None = None, hint: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, hint=hint)
        self.retry_after = retry_after


class ExpiredTokenError(AuthError):
    """The access token expired (PostgREST 401 "JWT expired", PGRST301/PGRST303)."""


class DeadSessionError(AuthError):
    """The refresh token is dead (revoked, reused, session ended): re-auth required."""


class ForbiddenError(RemoteError):
    """The server refused the write or read (403 / SQLSTATE 42501, e.g. RLS)."""


class PayloadError(RemoteError):
    """A remote payload is malformed, oversized or names unknown columns."""


class ConflictError(TablesyncError):
    """The conflict rule got inputs it cannot order."""


class DuplicateReplicaError(TablesyncError):
    """Another replica (another SQLite file) is syncing with this system id."""


class VaultError(TablesyncError):
    """The encrypted token store cannot be read or written."""
