"""Captured changes and the ``postgres_changes`` data Supabase sends for them (pure).

Mirrors the output part of Supabase's ``realtime.apply_rls``: ``columns`` and values limited to
what the subscriber's role may SELECT; ``old_record`` = replica-identity columns (primary key
only for DELETE on RLS tables); 400/401/413 errors.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from typing import Any

from tablesync.devserver.realtime_capture import TableInfo
from tablesync.devserver.errors import PayloadError

MAX_RECORD_BYTES = 1024 * 1024  # Supabase's default max_record_bytes
SMALL_VALUE_BYTES = 64  # what survives in a record over MAX_RECORD_BYTES
TOAST_THRESHOLD = 2032  # PostgreSQL's TOAST_TUPLE_THRESHOLD (8 kB pages)


@dataclass(frozen=True)
class Change:
    """One row change as the capture trigger reported it."""

    id: int
    schema: str
    table: str
    type: str  # INSERT | UPDATE | DELETE
    commit_timestamp: str
    record: dict[str, Any] | None
    old: dict[str, Any] | None  # the full old row (trigger OLD)
    size: int  # bytes of the captured JSON


def parse_change(text: str) -> Change:
    """Parse the JSON written by ``realtime.tablesync_capture()``."""
    try:
        raw = json.loads(text)
        return Change(int(raw["id"]), str(raw["schema"]), str(raw["table"]), str(raw["type"]),
                      str(raw["commit_timestamp"]), raw.get("record"), raw.get("old"),
                      len(text.encode()))
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"captured change is not valid JSON from the trigger: {exc}") from exc


def stored_bytes(value: Any) -> int:
    """About what PostgreSQL stores for a value: its text (strings) or JSON, compressed
    (zlib level 1 standing in for pglz) unless compression saves under 25 %, as pglz's
    default strategy keeps such values uncompressed."""
    raw = (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).encode()
    if len(raw) <= TOAST_THRESHOLD:
        return len(raw)
    packed = len(zlib.compress(raw, 1))
    return packed if packed <= len(raw) * 3 // 4 else len(raw)


def omit_unchanged_toast(change: Change) -> Change:
    """An UPDATE as logical decoding reports it: an unchanged value stored out of line
    (TOAST) is not in the new tuple, so wal2json / Realtime leave it out of ``record``
    (the ``columns`` list still names it). A value counts as stored out of line when,
    compressed, it is still over :data:`TOAST_THRESHOLD` bytes (an approximation:
    PostgreSQL decides on the whole row, and may move smaller values out too)."""
    if change.type != "UPDATE" or not change.record or change.old is None:
        return change
    old = change.old
    record = {k: v for k, v in change.record.items()
              if not (k in old and old[k] == v and stored_bytes(v) > TOAST_THRESHOLD)}
    if len(record) == len(change.record):
        return change
    return dataclasses.replace(change, record=record)


def identity_values(change: Change, info: TableInfo) -> dict[str, Any]:
    """The old row's replica-identity columns (what WAL would carry)."""
    old = change.old or {}
    return {name: old[name] for name in info.identity if name in old}


def filter_columns(change: Change, info: TableInfo) -> dict[str, Any]:
    """The values filters are evaluated on: new record, or the old identity for DELETE."""
    if change.type == "DELETE":
        return identity_values(change, info)
    return dict(change.record or {})


def access_error(change: Change, info: TableInfo, selectable: frozenset[str]) -> str | None:
    """Supabase's 400 (no primary key) / 401 (role cannot read it) for INSERT/UPDATE."""
    if change.type == "DELETE":
        return None
    if not info.pk:
        return "Error 400: Bad Request, no primary key"
    if not all(col in selectable for col in info.pk):
        return "Error 401: Unauthorized"
    return None


def _fits(value: Any) -> bool:
    return len(json.dumps(value, ensure_ascii=False).encode()) <= SMALL_VALUE_BYTES


def build_data(change: Change, info: TableInfo, selectable: frozenset[str]) -> dict[str, Any]:
    """The ``data`` object of a ``postgres_changes`` event for one role."""
    base: dict[str, Any] = {"schema": change.schema, "table": change.table, "type": change.type}
    error = access_error(change, info, selectable)
    if error is not None:
        return {**base, "errors": [error]}
    too_big = change.size > MAX_RECORD_BYTES

    def keep(name: str, value: Any) -> bool:
        return name in selectable and (not too_big or _fits(value))

    data: dict[str, Any] = {
        **base,
        "commit_timestamp": change.commit_timestamp,
        "columns": [{"name": n, "type": t} for n, t in info.columns if n in selectable],
    }
    if change.type in ("INSERT", "UPDATE"):
        data["record"] = {k: v for k, v in (change.record or {}).items() if keep(k, v)}
    if change.type in ("UPDATE", "DELETE"):
        old = {k: v for k, v in identity_values(change, info).items() if keep(k, v)}
        if change.type == "DELETE" and info.rls:
            old = {k: v for k, v in old.items() if k in info.pk}
        data["old_record"] = old or None
    data["errors"] = ["Error 413: Payload Too Large"] if too_big else None
    return data
