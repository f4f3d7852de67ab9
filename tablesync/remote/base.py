"""The ``Remote`` seam: what the engine needs from Supabase, and how failures are typed.

The engine talks to the backend only through :class:`Remote` (REST part, blocking, called
from the engine's worker thread) and :class:`Subscriber` (Realtime, asyncio-based). Real
implementations: :mod:`tablesync.remote.rest` and :mod:`tablesync.remote.realtime`; an
in-memory one lives in :mod:`tablesync.remote.memory`.

Failure mapping (one place, used by every implementation, see :func:`error_for_status`):

=====================================  ====================================================
network error, timeout, 5xx            :class:`~tablesync.errors.TransientRemoteError`
429 (any layer)                        ``TransientRemoteError`` with ``retry_after``
401 + message "JWT expired"            :class:`ExpiredTokenError` (refresh, retry once)
401 otherwise, GoTrue 400 grants       :class:`~tablesync.errors.AuthError` (re-auth)
403, SQLSTATE 42501                    :class:`ForbiddenError`
other 4xx                              :class:`~tablesync.errors.RemoteError`
malformed / oversized / bad rows       :class:`~tablesync.errors.PayloadError`
=====================================  ====================================================
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from tablesync.errors import (AuthError, DeadSessionError, ExpiredTokenError,  # noqa: F401
                              ForbiddenError, PayloadError, RemoteError,
                              TransientRemoteError)
from tablesync.model import ApplyOutcome, Outcome, TableSpec
from tablesync.sql.base import pg_type
from tablesync.vault import Secret, Tokens

__all__ = [
    "APPLY_OUTCOMES", "ApplyOutcome", "ChangeEvent", "DeadSessionError", "EncodedRows",
    "ExpiredTokenError", "ForbiddenError", "MAX_PAGE", "Page", "RealtimeChannel", "Remote",
    "ResponseTooLarge", "SYNC_COLUMNS", "Subscriber", "SystemChannel", "TRANSPORTS",
    "TableChannel", "TokenSource", "encoded_rows", "error_for_status", "filter_value",
    "parse_outcomes", "realtime_channels", "row_checker", "system_topic", "unencodable",
    "validate_row",
]

MAX_PAGE = 1000                      # PostgREST's default max_rows: never ask for more
APPLY_OUTCOMES = ("applied", "duplicate", "superseded", "forbidden", "error")

# Sync columns on the server and their JSON types (None allowed where marked).
SYNC_COLUMNS: dict[str, tuple[str, bool]] = {
    "_ts_hlc": ("int", False), "_ts_origin": ("text", False), "_ts_deleted": ("bool", False),
    "_ts_base_hlc": ("int", False), "_ts_base_origin": ("text", False),
    "_ts_seq": ("int", True), "_ts_xid": ("int", True),
}


# ----------------------------------------------------------------------- data types


class EncodedRows(list):  # type: ignore[type-arg]
    """Apply rows (a plain list of dicts) that also carry their request body, encoded
    ahead of the send: a REST remote sends ``body`` as is, any other remote uses the rows."""

    body: bytes = b""


def encoded_rows(rows: list[dict[str, Any]]) -> EncodedRows:
    """``rows`` with the apply request body ``{"rows": [...]}`` encoded once (compact JSON,
    UTF-8). A value JSON cannot carry (NaN, Infinity, bytes, text that is not valid UTF-8)
    leaves ``body`` empty: :func:`unencodable` then names the rows and the reason (the
    push parks them, see ``Cycles``)."""
    out = EncodedRows(rows)
    try:
        out.body = json.dumps({"rows": rows}, separators=(",", ":"), allow_nan=False,
                              ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):             # UnicodeEncodeError is a ValueError
        out.body = b""
    return out


def value_problem(value: Any) -> str | None:
    """Why ``value`` cannot be sent as JSON (None: it can)."""
    if isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"a REAL {name}, which JSON cannot carry"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"a BLOB of {len(value)} byte(s), which this column cannot carry as JSON"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text that is not valid UTF-8"
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        return f"a {type(value).__name__} JSON cannot carry ({str(exc)[:80]})"
    return None


def unencodable(rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Index -> reason for each row of ``rows`` that cannot be encoded as apply JSON
    (naming the first bad column)."""
    bad: dict[int, str] = {}
    for i, row in enumerate(rows):
        for name, value in row.items():
            why = value_problem(value)
            if why is not None:
                bad[i] = f"cannot be sent: column {name!r} holds {why}"
                break
    return bad


@dataclass(frozen=True)
class TableChannel:
    """A ``postgres_changes`` subscription: ``table`` filtered on ``<scope>=eq.<system_id>``."""

    table: str
    scope: str
    system_id: str

    @property
    def topic(self) -> str:
        return f"realtime:{self.table}"

    @property
    def filter(self) -> str:
        return f"{self.scope}=eq.{filter_value(self.system_id)}"

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table,)


@dataclass(frozen=True)
class SystemChannel:
    """One private channel for all of a system's tables: Broadcast from Database, or, with
    ``changes`` ((table, scope column) pairs), one filtered ``postgres_changes`` entry each."""

    system_id: str
    tables: tuple[str, ...]
    changes: tuple[tuple[str, str], ...] = ()

    def filter(self, scope: str) -> str:
        return f"{scope}=eq.{filter_value(self.system_id)}"

    @property
    def topic(self) -> str:
        return f"realtime:{system_topic(self.system_id)}"

    @property
    def table(self) -> str:
        """What logs call this channel."""
        return system_topic(self.system_id)


RealtimeChannel = TableChannel | SystemChannel
TRANSPORTS = ("broadcast", "postgres_changes")


def system_topic(system_id: str) -> str:
    """The Realtime topic of a system's changes (``tablesync.sql.broadcast``'s
    ``public.tablesync_topic``): ``tablesync:<id>``, or ``tablesync#<md5>`` for ids over 200
    bytes (a joined topic must fit Realtime's 255-byte frames)."""
    raw = system_id.encode()
    if len(raw) <= 200:
        return "tablesync:" + system_id
    return "tablesync#" + hashlib.md5(raw, usedforsecurity=False).hexdigest()


def filter_value(value: str) -> str:
    """A ``postgres_changes`` filter value, double-quoted (``\\`` and ``\"`` escaped) when
    it holds a comma, quote, parenthesis, backslash or surrounding space that would
    otherwise split or change the filter."""
    if value and not any(c in value for c in ',"()\\') and value == value.strip():
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def realtime_channels(transport: str, tables: Sequence[tuple[str, str]], system_id: str,
                      extra: Sequence[tuple[str, str]] = ()) -> list[RealtimeChannel]:
    """The channel of a transport: one private channel for every table (``tables`` and
    ``extra``, as (name, scope column)) of the system; with ``postgres_changes`` it carries
    one filtered entry per table (a private channel: it works on private-only projects)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown realtime transport {transport!r} (one of {TRANSPORTS})")
    pairs = (*tables, *extra)
    names = tuple(name for name, _ in pairs)
    if transport == "broadcast":
        return [SystemChannel(system_id, names)]
    return [SystemChannel(system_id, names, tuple(pairs))]


@dataclass(frozen=True)
class ChangeEvent:
    """A ``postgres_changes`` record as received (a hint: the engine applies by LWW)."""

    table: str
    type: str                                   # INSERT | UPDATE | DELETE
    record: dict[str, Any] = field(default_factory=dict)
    old_record: dict[str, Any] = field(default_factory=dict)
    commit_timestamp: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """One catch-up page: valid rows, rejected rows, and where the next page starts.

    ``size`` counts every row received (a page with ``size < limit`` is the last);
    ``last_seq`` is the highest ``_ts_seq`` seen, rejected rows included, so one bad row
    never stalls the catch-up.
    """

    rows: list[dict[str, Any]]
    rejected: list[PayloadError] = field(default_factory=list)
    size: int = 0
    last_seq: int | None = None
    # the rejected rows as received (parallel to ``rejected`` when given), so the engine can
    # record them by table and id in ``_tablesync_refused``
    rejected_rows: list[Any] = field(default_factory=list)


class ResponseTooLarge(PayloadError):
    """A response over the client's size cap (a catch-up asks again for fewer rows)."""


class TokenSource(Protocol):
    """Where REST and Realtime get the current access token from."""

    def access_token(self) -> Secret | None:
        """The token to send now (None: signed out, use the anon key)."""

    def refresh_expired(self, expired: Secret | None) -> Secret:
        """Refresh after ``expired`` was refused (single-flight; raises AuthError)."""


class Remote(Protocol):
    """The REST side of a Supabase project (blocking calls with timeouts)."""

    def sign_in(self, email: str, password: Secret) -> Tokens: ...

    def refresh(self, refresh_token: Secret) -> Tokens: ...

    def apply(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[ApplyOutcome]: ...

    def watermark(self) -> int: ...

    def pull_page(self, table: str, scope: str, system_id: str, cursor: int,
                  after_seq: int, limit: int = MAX_PAGE) -> Page: ...

    def probe(self) -> bool:
        """Does the backend answer at all (any HTTP status, short timeout)?"""
        ...

    def close(self) -> None: ...


class Subscriber(Protocol):
    """The Realtime side: live ``postgres_changes`` per table."""

    async def run(self) -> None:
        """Connect, join, deliver; reconnect with backoff until :meth:`stop`."""

    def stop(self) -> None: ...

    def set_token(self, token: Secret) -> None: ...


OnChange = Callable[[ChangeEvent], Awaitable[None] | None]
OnStatus = Callable[[str, bool], Awaitable[None] | None]


# ---------------------------------------------------------------------- error mapping


def page_of(table: str, spec: TableSpec | None, body: list[Any],
            ok: Callable[[Any], bool] | None = None) -> Page:
    """A catch-up response (a JSON array of rows) as a :class:`Page`: rows that pass
    :func:`validate_row` (``ok``, a :func:`row_checker`, is tried first: the fast path for
    well-formed rows) and carry an integer ``_ts_seq``; the others rejected with the
    reason. The page's last sequence counts every row with one, rejected or not."""
    rows: list[dict[str, Any]] = []
    rejected: list[PayloadError] = []
    bad: list[Any] = []
    last: int | None = None
    for i, raw in enumerate(body):
        seq = raw.get("_ts_seq") if isinstance(raw, dict) else None
        if isinstance(seq, int) and not isinstance(seq, bool):
            last = seq if last is None or seq > last else last
            if ok is not None and ok(raw):     # the common case: a well-formed row
                rows.append(raw)
                continue
        try:
            if spec is not None:
                validate_row(spec, raw, where=f"pull {table}")
            elif not isinstance(raw, dict):
                raise PayloadError(f"pull {table}: row {i} is not an object")
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise PayloadError(f"pull {table}: row {i} has no integer _ts_seq")
        except PayloadError as exc:
            rejected.append(exc)
            bad.append(raw)
            continue
        rows.append(raw)
    return Page(rows, rejected, len(body), last, bad)


def error_for_status(status: int, body: Any, *, where: str,
                     retry_after: float | None = None) -> RemoteError:
    """The typed error for an HTTP error response (``body`` parsed JSON or text)."""
    message, code = _message_and_code(body)
    text = f"{where}: HTTP {status}" + (f" {code}" if code else "") + (
        f": {message}" if message else "")
    if status == 429:
        return TransientRemoteError(text, status=status, code=code, retry_after=retry_after)
    if status >= 500 or status == 408:
        return TransientRemoteError(text, status=status, code=code, retry_after=retry_after)
    if status == 401 and "jwt expired" in message.lower():
        return ExpiredTokenError(text, status=status, code=code)
    if status == 401:
        return AuthError(text, status=status, code=code, hint="run `tablesync login`")
    if status == 403 or code == "42501":
        return ForbiddenError(text, status=status, code=code)
    return RemoteError(text, status=status, code=code)


def _message_and_code(body: Any) -> tuple[str, str | None]:
    if isinstance(body, dict):
        msg = next((str(body[k]) for k in ("message", "msg", "error_description", "error")
                    if isinstance(body.get(k), str) and body.get(k)), "")
        code = body.get("error_code") or body.get("code")
        return msg, (str(code) if code is not None else None)
    if isinstance(body, str):
        return body.strip()[:200], None
    return "", None


# Answers that mean "the server's schema is behind this project's" (PostgREST):
# a missing table (PGRST205, or 42P01 before v12.2), a missing function (PGRST202, 42883),
# a missing column in a select or filter (42703) or in a request body (PGRST204).
MISSING_RELATION = frozenset({"PGRST205", "42P01", "PGRST202", "42883"})
MISSING_COLUMN = frozenset({"42703", "PGRST204"})
_COLUMN_NAMES = (re.compile(r"column\s+(?:\"?[^\"\s.]+\"?\.)?\"?([^\"\s]+)\"?\s+does not exist"),
                 re.compile(r"the '([^']+)' column"))


def server_behind(exc: BaseException) -> tuple[str, str | None] | None:
    """``("table", None)`` when ``exc`` says the server lacks a table or function,
    ``("column", name)`` when it lacks a column (name None if the message names none),
    None for any other error."""
    if not isinstance(exc, RemoteError) or exc.code is None:
        return None
    if exc.code in MISSING_RELATION and exc.status in (404, None):
        return ("table", None)
    if exc.code in MISSING_COLUMN:
        text = str(exc)
        for pattern in _COLUMN_NAMES:
            found = pattern.search(text)
            if found:
                return ("column", found.group(1))
        return ("column", None)
    return None


# --------------------------------------------------------------------- validation


def parse_outcomes(table: str, sent: Sequence[Mapping[str, Any]], body: Any,
                   pk: str) -> list[ApplyOutcome]:
    """Check the apply RPC's answer: one well-formed element per sent row, same order."""
    if not isinstance(body, list) or len(body) != len(sent):
        n = len(body) if isinstance(body, list) else type(body).__name__
        raise PayloadError(f"apply {table}: expected {len(sent)} outcomes, got {n}")
    out: list[ApplyOutcome] = []
    for i, (item, row) in enumerate(zip(body, sent)):
        if not isinstance(item, dict) or item.get("outcome") not in APPLY_OUTCOMES:
            raise PayloadError(f"apply {table} row {i}: malformed outcome "
                               f"{str(item)[:120]!r}")
        rid = str(item.get("id"))
        if rid != str(row.get(pk)):
            raise PayloadError(f"apply {table} row {i}: outcome for id {rid!r}, expected "
                               f"{row.get(pk)!r}")
        srow, msg = item.get("row"), item.get("message")
        if srow is not None and not isinstance(srow, dict):
            raise PayloadError(f"apply {table} row {i}: 'row' is not an object")
        out.append(ApplyOutcome(rid, Outcome(item["outcome"]), srow,
                                None if msg is None else str(msg)))
    return out


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "real": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    and math.isfinite(v),
    "text": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
    "scalar": lambda v: isinstance(v, (str, int, float, bool)),
    "any": lambda v: True,
}


_PG_KINDS = {"BIGINT": "int", "DOUBLE PRECISION": "real", "TEXT": "text", "BYTEA": "text",
             "BOOLEAN": "bool", "DATE": "text", "TIMESTAMP": "text", "TIMESTAMPTZ": "text",
             "TIME": "text", "UUID": "text", "JSONB": "any"}


def column_kind(sql_type: str) -> str:
    """A declared SQL type's JSON kind on the wire (the Postgres type of docs/types.md)."""
    if not sql_type.strip():
        return "any"
    try:
        pg = pg_type(sql_type).upper()
    except Exception:  # noqa: BLE001 - an unparsable type: accept any scalar
        return "scalar"
    return _PG_KINDS.get(pg, "scalar")


def validate_row(spec: TableSpec, row: Any, *, partial: bool = False,
                 where: str = "") -> dict[str, Any]:
    """Check a remote row against ``spec``; raise PayloadError naming table/row/column.

    ``partial`` accepts missing columns (Realtime may omit unchanged TOAST values), but
    never a missing primary key.
    """
    label = where or f"table {spec.name}"
    if not isinstance(row, dict):
        raise PayloadError(f"{label}: row is {type(row).__name__}, not an object")
    key = row.get(spec.primary_key)
    rid = f"{label} row {key!r}"
    if key is None:
        raise PayloadError(f"{label}: row without primary key {spec.primary_key!r}")
    expected = _expectations(spec)
    for name, value in row.items():
        found = expected.get(name)
        if found is None:
            _expected(spec, name, rid)           # raises: unknown column
            continue
        kind, nullable = found
        if value is None:
            if not nullable:
                raise PayloadError(f"{rid} column {name!r}: null in a NOT NULL column")
        elif not _KIND_CHECKS[kind](value):
            raise PayloadError(f"{rid} column {name!r}: expected {kind}, got "
                               f"{type(value).__name__} {str(value)[:40]!r}")
    if not partial and len(row) < len(expected):
        missing = [c for c in (*spec.column_names, *SYNC_COLUMNS) if c not in row]
        if missing:
            raise PayloadError(f"{rid}: missing column(s) {', '.join(missing)}")
    return row


def row_checker(spec: TableSpec) -> Callable[[Any], bool]:
    """A fast test for the common case: True only for a row :func:`validate_row` accepts
    (every expected column present, no other key, exact JSON types). False means "not
    sure": call :func:`validate_row` for the verdict and its message."""
    expected = _expectations(spec)
    keys = frozenset(expected)
    checks = tuple((name, _EXACT[kind] | ({type(None)} if nullable else set()))
                   for name, (kind, nullable) in expected.items() if kind != "any")
    reals = tuple(name for name, (kind, _) in expected.items() if kind == "real")
    required = tuple(name for name, (kind, nullable) in expected.items()
                     if kind == "any" and not nullable)

    def check(row: Any) -> bool:
        if type(row) is not dict or row.keys() != keys:
            return False
        for name, types in checks:
            if type(row[name]) not in types:
                return False
        for name in required:
            if row[name] is None:
                return False
        for name in reals:
            v = row[name]
            if type(v) is float and not math.isfinite(v):
                return False
        return True     # the key is NOT NULL (see _expectations), so present and not null

    return check


# Exact types a kind accepts without a closer look (bool 0/1 ints, subclasses: validate_row).
_EXACT: dict[str, frozenset[type]] = {
    "int": frozenset({int}), "real": frozenset({int, float}), "text": frozenset({str}),
    "bool": frozenset({bool}), "scalar": frozenset({str, int, float, bool}),
}

_EXPECTED: dict[int, tuple[TableSpec, dict[str, tuple[str, bool]]]] = {}


def _expectations(spec: TableSpec) -> dict[str, tuple[str, bool]]:
    """(kind, nullable) per column name of ``spec``, computed once per spec object."""
    hit = _EXPECTED.get(id(spec))
    if hit is None or hit[0] is not spec:
        table = {c.name: (column_kind(c.type), c.nullable and c.name != spec.primary_key)
                 for c in spec.columns}
        hit = _EXPECTED[id(spec)] = (spec, {**table, **SYNC_COLUMNS})
    return hit[1]


def _expected(spec: TableSpec, name: str, rid: str) -> tuple[str, bool]:
    found = _expectations(spec).get(name)
    if found is None:
        raise PayloadError(f"{rid}: unknown column {name!r}",
                           hint="the server schema is ahead: run `tablesync generate`")
    return found
