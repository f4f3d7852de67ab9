"""Records that need a human: parked local changes and refused server rows.

A *parked* record (``_tablesync_parked``) is a local change the server refused for its
content or permissions; its pending queue entries are held back from pushes. A *refused*
record (``_tablesync_refused``) is a server row this replica could not apply. Both are
listed by :func:`list_parked`, released by :func:`retry` and given up by :func:`drop`,
which first saves what it discards to a 0600 JSON backup file.

Plain functions taking a connection; each runs inside the caller's write transaction
(:meth:`tablesync.store.LocalStore.drop_parked` and friends), so a failed backup leaves
the store untouched. Used by the status page (``/api/parked``) and ``tablesync sync parked``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tablesync.errors import StoreError
from tablesync.localdb import echo_guard, images, metas, quote, write_backup_file
from tablesync.model import TableSpec

PUSH, PULL = "push", "pull"
KINDS = (PUSH, PULL)


@dataclass(frozen=True)
class ParkedRecord:
    """One record waiting for a human.

    ``kind`` is :data:`PUSH` (a local change the server refused: parked) or :data:`PULL`
    (a server row this replica refused). ``since`` is the time it was parked or last
    refused (ISO-8601 UTC, ``Z``); ``pending`` the unsynced queue entries held back (push); ``tries`` how often
    the row was refused (pull); ``version`` the newest version concerned as a decimal
    string (exact: HLC integers exceed JavaScript's range), or None; ``row`` the data
    concerned: the latest pending image (push) or the refused server row (pull), or None.
    """

    kind: str
    table: str
    record_id: str
    reason: str
    since: str
    pending: int = 0
    tries: int = 0
    version: str | None = None
    row: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (every value a string, number, None or a dict of the row)."""
        return asdict(self)


def list_parked(conn: sqlite3.Connection, limit: int = 1000,
                specs: Mapping[str, TableSpec] | None = None, *,
                record: tuple[str, str] | None = None) -> list[ParkedRecord]:
    """Parked pushes then refused pulls, each oldest first; at most ``limit`` of each
    (only those of ``record``, a (table, record id) pair, when given).

    A push's ``row`` is the local row (read through ``specs``; without them, or for a
    deleted record, the last queue entry's image, which only deletes carry)."""
    where, args = ("WHERE table_name = ? AND record_id = ?", [*record]) if record else ("", [])
    out: list[ParkedRecord] = []
    for table, rid, reason, at in conn.execute(
            f"SELECT table_name, record_id, reason, parked_at FROM _tablesync_parked {where} "
            f"ORDER BY parked_at, table_name, record_id LIMIT ?", (*args, limit)).fetchall():
        entries = _pending(conn, table, rid)
        latest = entries[-1] if entries else None
        spec = (specs or {}).get(table)
        row = images(conn, spec, [rid]).get(rid) if spec is not None else None
        out.append(ParkedRecord(
            PUSH, table, rid, reason, _iso(at), pending=len(entries),
            version=str(latest["hlc"]) if latest and latest["hlc"] else None,
            row=row if row is not None else (latest["record_data"] if latest else None)))
    for table, rid, reason, at, tries, hlc, img in conn.execute(
            f"SELECT table_name, record_id, reason, refused_at, tries, hlc, row FROM "
            f"_tablesync_refused {where} ORDER BY refused_at, table_name, record_id LIMIT ?",
            (*args, limit)).fetchall():
        out.append(ParkedRecord(PULL, table, rid, reason, _iso(at), tries=tries,
                                version=str(hlc) if hlc is not None else None,
                                row=_loads(img)))
    return out


def retry(conn: sqlite3.Connection, table: str, key: str, kind: str | None = None) -> int:
    """Release one record (both lists, or only ``kind``); how many entries were released.

    A parked push loses its mark and its entries' retry counts: the next push sends it
    again (and parks it again if the server still refuses). A refused pull that kept its
    row image is retried by every catch-up already: its count is reset so the next one
    tries afresh. One without an image cannot be retried here (the server must send the
    row again: ``tablesync sync reset`` re-reads everything). Raises :class:`StoreError`
    naming the record when there is nothing to retry.
    """
    _check_kind(kind)
    n = 0
    if kind in (None, PUSH):
        conn.execute("UPDATE sync_queue SET retry_count = 0 WHERE synced_at IS NULL AND "
                     "table_name = ? AND record_id = ?", (table, key))
        n += conn.execute("DELETE FROM _tablesync_parked WHERE table_name = ? AND "
                          "record_id = ?", (table, key)).rowcount
    if kind in (None, PULL):
        found = conn.execute("SELECT row IS NOT NULL FROM _tablesync_refused WHERE "
                             "table_name = ? AND record_id = ?", (table, key)).fetchone()
        if found is not None and not found[0] and n == 0:
            raise StoreError(f"refused row {table} {key!r} kept no image to retry with; "
                             f"drop it, or re-read everything with `tablesync sync reset`")
        if found is not None and found[0]:
            n += conn.execute("UPDATE _tablesync_refused SET tries = 0 WHERE table_name = ? "
                              "AND record_id = ?", (table, key)).rowcount
    if n == 0:
        raise StoreError(f"no parked record {table} {key!r}" + (f" ({kind})" if kind else ""))
    return n


def drop(conn: sqlite3.Connection, table: str, key: str, backup_dir: Path,
         specs: Mapping[str, TableSpec] | None = None, kind: str | None = None) -> Path:
    """Give one record up (both lists, or only ``kind``); the 0600 backup file's path.

    The backup (JSON: the parked/refused entries, the discarded queue entries and the
    local row) is written and synced first; then a parked push's unsynced entries are
    marked synced without being sent and its mark removed, and a refused pull is
    forgotten. With ``specs``, the local row of a record the server never acknowledged
    (an insert that never got through) is deleted, as ``sync reset`` does; a row the server
    holds keeps its local content until the server's next change to it. Raises
    :class:`StoreError` naming the record when it is in neither list.
    """
    _check_kind(kind)
    records = [r for r in list_parked(conn, 1, specs, record=(table, key))
               if kind in (None, r.kind)]
    if not records:
        raise StoreError(f"no parked record {table} {key!r}" + (f" ({kind})" if kind else ""))
    kinds = {r.kind for r in records}
    spec = (specs or {}).get(table)
    entries = _pending(conn, table, key) if PUSH in kinds else []
    current = images(conn, spec, [key]).get(key) if spec is not None else None
    backup = {"table": table, "record_id": key, "dropped_at": _utc(),
              "records": [r.to_dict() for r in records], "queue_entries": entries,
              "local_row": current}
    path = write_backup(backup_dir, table, key, backup)
    if PUSH in kinds:
        conn.execute("UPDATE sync_queue SET synced_at = ?, last_error = 'dropped' WHERE "
                     "synced_at IS NULL AND table_name = ? AND record_id = ?",
                     (_utc(), table, key))
        conn.execute("DELETE FROM _tablesync_parked WHERE table_name = ? AND record_id = ?",
                     (table, key))
        meta = metas(conn, table, [key]).get(key)
        if spec is not None and (meta is None or meta.deleted):
            with echo_guard(conn):
                conn.execute(f"DELETE FROM {quote(table)} WHERE {quote(spec.primary_key)} = ?",
                             (key,))
    if PULL in kinds:
        conn.execute("DELETE FROM _tablesync_refused WHERE table_name = ? AND record_id = ?",
                     (table, key))
    return path


def _iso(sqlite_utc: str) -> str:
    """SQLite's UTC ``YYYY-MM-DD HH:MM:SS.mmm`` as ISO-8601 with ``Z``."""
    text = str(sqlite_utc).strip().replace(" ", "T")
    return text if text.endswith("Z") or "+" in text else text + "Z"


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise StoreError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _pending(conn: sqlite3.Connection, table: str, rid: str) -> list[dict[str, Any]]:
    cols = ("id", "operation", "record_data", "created_at", "retry_count", "hlc", "last_error")
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM sync_queue WHERE synced_at IS NULL "
                        f"AND table_name = ? AND record_id = ? ORDER BY id",
                        (table, rid)).fetchall()
    out = [dict(zip(cols, r)) for r in rows]
    for e in out:
        e["record_data"] = _loads(e["record_data"])
    return out


def _loads(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"_unreadable": text[:200]}
    return value if isinstance(value, dict) else {"_value": value}


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_backup(folder: Path, table: str, key: str, data: dict[str, Any]) -> Path:
    """``data`` as a new 0600 JSON file ``dropped-<table>-<key>-<time>.json`` in
    ``folder`` (fsynced); its path."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{table}-{key}")[:80]
    text = json.dumps(data, default=str, sort_keys=True, indent=1) + "\n"
    return write_backup_file(folder, f"dropped-{safe}-", ".json", text,
                             what=f"the backup of {table} {key!r}",
                             undone="nothing was dropped")
