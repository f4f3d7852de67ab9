"""Reset of the local store, with a backup of what it discards.

:func:`reset_store` clears the queue and all sync state (versions, cursors, parked
records) so the next catch-up re-reads everything; unsynced queue entries are refused, or
with ``discard_pending`` first saved to a 0600 JSON lines backup file. Runs inside the
caller's write transaction (:meth:`tablesync.store.LocalStore.reset`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablesync.errors import StoreError
from tablesync.localdb import echo_guard, images, metas, quote, utcnow, write_backup_file
from tablesync.model import TableSpec
from tablesync.stamp import stamp_pending


@dataclass(frozen=True)
class ResetResult:
    """What :meth:`LocalStore.reset` did."""

    discarded: int  # unsynced queue entries dropped (saved in ``backup``)
    backup: Path | None  # the JSON lines file holding them (None when nothing was pending)
    removed_rows: int  # local rows of never-acknowledged inserts deleted


def reset_store(conn: sqlite3.Connection, specs: Mapping[str, TableSpec], *,
                discard_pending: bool, backup_dir: Path | None,
                max_clock_skew: float = 300.0) -> ResetResult:
    """Clear the queue and the sync state (see :meth:`LocalStore.reset`) inside a write
    transaction; the newest queue entry stays, marked synced."""
    stamp_pending(conn)
    entries = _unsynced_entries(conn, specs)
    if entries and not discard_pending:
        records = len({(e["table_name"], e["record_id"]) for e in entries})
        raise StoreError(
            f"{db_path(conn)}: {len(entries)} unsynced change(s) to {records} "
            f"record(s); push them first (`tablesync sync now`) or pass "
            f"--discard-pending (they are saved to a backup file first)")
    backup = _write_backup(conn, entries, backup_dir) if entries else None
    removed = _drop_unacknowledged(conn, specs, entries)
    conn.execute("UPDATE _tablesync_state SET hlc = max(hlc, coalesce((SELECT "
                 "max(hlc) FROM sync_queue), 0))")
    # whatever the clock holds (a version adopted before versions were bounded, up to
    # 2^63 - 1): never above this machine's clock plus the bound, so stamping and the
    # server accept the next writes
    ceiling = (time.time_ns() // 1_000_000 + int(max_clock_skew * 1000)) << 16
    conn.execute("UPDATE _tablesync_state SET hlc = min(hlc, ?)", (ceiling,))
    conn.execute("UPDATE _tablesync_stamp SET hlc = min(hlc, ?)", (ceiling,))
    # keep the newest queue row (marked synced) so ids are never handed out again
    conn.execute("DELETE FROM sync_queue WHERE id < (SELECT max(id) FROM sync_queue)")
    conn.execute("UPDATE sync_queue SET synced_at = coalesce(synced_at, ?)", (utcnow(),))
    for table in ("_tablesync_meta", "_tablesync_cursors", "_tablesync_parked",
                  "_tablesync_refused"):
        conn.execute(f"DELETE FROM {quote(table)}")
    return ResetResult(len(entries), backup, removed)


def db_path(conn: sqlite3.Connection) -> str:
    """The file of the connection's main database (or a description when it has none)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row and row[2] else "the local database"


def _unsynced_entries(conn: sqlite3.Connection,
                      specs: Mapping[str, TableSpec]) -> list[dict[str, Any]]:
    cols = ("id", "operation", "table_name", "record_id", "record_data", "created_at",
            "retry_count", "hlc", "last_error")
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM sync_queue WHERE synced_at IS "
                        f"NULL ORDER BY id").fetchall()
    out = [dict(zip(cols, r)) for r in rows]
    by_table: dict[str, set[str]] = {}
    for e in out:
        by_table.setdefault(e["table_name"], set()).add(e["record_id"])
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for table, rids in by_table.items():
        spec = specs.get(table)
        if spec is not None:
            for rid, data in images(conn, spec, sorted(rids)).items():
                found[(table, rid)] = data
    for e in out:
        e["record_data"] = json.loads(e["record_data"]) if e["record_data"] else None
        e["current_row"] = found.get((e["table_name"], e["record_id"]))
    return out


def _write_backup(conn: sqlite3.Connection, entries: list[dict[str, Any]],
                  backup_dir: Path | None) -> Path:
    db = Path(db_path(conn))
    text = "".join(json.dumps(e, default=str, sort_keys=True) + "\n" for e in entries)
    return write_backup_file(backup_dir if backup_dir is not None else db.parent,
                             f"{db.name}.reset-", ".jsonl", text, what="the reset backup",
                             undone="nothing was cleared")


def _drop_unacknowledged(conn: sqlite3.Connection, specs: Mapping[str, TableSpec],
                         entries: list[dict[str, Any]]) -> int:
    """Delete local rows of discarded records the server never acknowledged."""
    records = {(e["table_name"], e["record_id"]) for e in entries}
    removed = 0
    with echo_guard(conn):
        for table, rid in sorted(records):
            spec = specs.get(table)
            if spec is None:
                continue
            meta = metas(conn, table, [rid]).get(rid)
            if meta is None or meta.deleted:
                removed += conn.execute(f"DELETE FROM {quote(table)} WHERE "
                                        f"{quote(spec.primary_key)} = ?", (rid,)).rowcount
    return removed
