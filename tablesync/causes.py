"""Why sync is not in step: every failure's real cause, and the one mapping from a cause to
the indicator colour, the ``/healthz`` code and ``tablesync sync status``'s exit code.

:func:`classify` looks at an exception (and the exceptions it was raised from): SQLite's
"database is locked" and "database or disk is full", an ``ENOSPC`` write, tablesync's
remote errors by type and status. Pure: stdlib only (``sqlite3`` for its error codes).
The table is documented in docs/operations.md ("Causes and what they mean").
"""

from __future__ import annotations

import errno
import sqlite3
from enum import Enum

from tablesync.errors import (AuthError, ForbiddenError, PayloadError, RemoteError,
                              StoreError, TransientRemoteError)

__all__ = ["Cause", "EXIT_CODES", "HTTP_CODES", "LOCAL_CAUSES", "RED_CAUSES", "classify",
           "describe"]


class Cause(str, Enum):
    """The cause of the last failure (``none`` once a cycle succeeds again)."""

    NONE = "none"
    SERVER_UNREACHABLE = "server_unreachable"      # no answer, 5xx, 429: retried
    AUTH = "auth"                                  # credentials refused, session dead
    SERVER_REFUSED = "server_refused"              # 4xx (403 RLS, 400), a malformed answer
    LOCAL_LOCKED = "local_locked"                  # SQLite busy past its timeout
    LOCAL_FULL = "local_full"                      # SQLITE_FULL / ENOSPC
    BAD_LOCAL_ROW = "bad_local_row"                # a row this replica cannot send or apply
    SERVER_SCHEMA_BEHIND = "server_schema_behind"  # the server lacks a table/column/function


_TEXT = {
    Cause.NONE: "",
    Cause.SERVER_UNREACHABLE: "server unreachable",
    Cause.AUTH: "authentication refused",
    Cause.SERVER_REFUSED: "the server refused the request",
    Cause.LOCAL_LOCKED: "local database locked",
    Cause.LOCAL_FULL: "local database or disk full",
    Cause.BAD_LOCAL_ROW: "a local row cannot be synced",
    Cause.SERVER_SCHEMA_BEHIND: "the server's schema is behind (apply supabase.sql)",
}

# Causes that need a human: red, /healthz 503, exit 2. SERVER_UNREACHABLE is "offline and
# queueing" (yellow, 200, exit 1); NONE leaves the colour to the other rules.
RED_CAUSES = frozenset(set(Cause) - {Cause.NONE, Cause.SERVER_UNREACHABLE})
# The local database cannot be written right now: nothing is wrong with the rows (a catch-up
# that meets one is retried whole, its cursor unchanged, instead of refusing rows).
LOCAL_CAUSES = frozenset({Cause.LOCAL_LOCKED, Cause.LOCAL_FULL})
EXIT_CODES = {"green": 0, "yellow": 1, "red": 2}
HTTP_CODES = {"green": 200, "yellow": 200, "red": 503}

_SCHEMA_CODES = {"42P01", "42703", "42883", "PGRST202", "PGRST204", "PGRST205"}
_LOCKED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def describe(cause: Cause | str) -> str:
    """One short phrase for ``cause`` (the state reason the page shows)."""
    try:
        return _TEXT[Cause(cause)]
    except ValueError:
        return ""


def classify(exc: BaseException | None) -> Cause:
    """The cause of ``exc``; ``NONE`` for None and for errors tablesync cannot place (a
    bug: the indicator turns red after ``REPEATED_ERRORS`` of them in a row)."""
    for err in _chain(exc):
        local = _local(err)
        if local is not Cause.NONE:
            return local
    if isinstance(exc, AuthError):
        return Cause.AUTH
    if isinstance(exc, TransientRemoteError):
        return Cause.SERVER_UNREACHABLE
    if isinstance(exc, RemoteError):
        if exc.code in _SCHEMA_CODES:
            return Cause.SERVER_SCHEMA_BEHIND
        if isinstance(exc, (ForbiddenError, PayloadError)) or exc.status is not None:
            return Cause.SERVER_REFUSED
        return Cause.SERVER_UNREACHABLE
    if isinstance(exc, StoreError):
        return Cause.BAD_LOCAL_ROW
    return Cause.NONE


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what it was raised from (bounded: at most 10 links)."""
    out: list[BaseException] = []
    while exc is not None and len(out) < 10 and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _local(err: BaseException) -> Cause:
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        text = str(err).lower()
        if (code is not None and (code & 0xFF) in _LOCKED) or "locked" in text:
            return Cause.LOCAL_LOCKED
        if (code is not None and (code & 0xFF) == sqlite3.SQLITE_FULL) or "is full" in text:
            return Cause.LOCAL_FULL
    elif isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return Cause.LOCAL_FULL
    elif isinstance(err, StoreError):
        text = str(err).lower()
        if "database is locked" in text or "database table is locked" in text:
            return Cause.LOCAL_LOCKED
        if "database or disk is full" in text:
            return Cause.LOCAL_FULL
    return Cause.NONE
