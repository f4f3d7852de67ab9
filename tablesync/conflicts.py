"""The conflict log of the local store: every superseded concurrent write.

Each one is kept in the table ``_tablesync_conflicts`` (once per record and version pair:
a redelivered row logs nothing new) and appended to a JSON lines file (one object per
conflict: table, record id, winner, loser, reason, resolved_at; 0600, as it holds whole
rows). Rows are recorded inside the caller's transaction; the file is written after it
commits.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tablesync.errors import StoreError
from tablesync.localdb import utcnow
from tablesync.model import RowState
from tablesync.rows import state_json, version_text


def record_conflict(conn: sqlite3.Connection, table: str, rid: str, winner: RowState,
                    loser: RowState, reason: str) -> dict[str, Any] | None:
    """Record one conflict; its JSON lines entry, or None if it was recorded before."""
    entry = {"table": table, "record_id": rid, "winner": state_json(winner),
             "loser": state_json(loser), "reason": reason, "resolved_at": utcnow()}
    cur = conn.execute(
        "INSERT OR IGNORE INTO _tablesync_conflicts (table_name, record_id, "
        "winner_version, loser_version, winner, loser, reason, resolved_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (table, rid, version_text(winner.version), version_text(loser.version),
         json.dumps(entry["winner"], default=str), json.dumps(entry["loser"], default=str),
         reason, entry["resolved_at"]))
    return entry if cur.rowcount == 1 else None


def write_conflict_log(path: Path | None, entries: list[dict[str, Any]]) -> None:
    """Append ``entries`` to the JSON lines file at ``path`` (nothing if None or none)."""
    if not entries or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: the entries hold whole rows; a log made readable by an older version is
        # tightened on its next write
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            for e in entries:
                fh.write(json.dumps(e, default=str, sort_keys=True) + "\n")
    except OSError as exc:
        raise StoreError(f"{path}: cannot write the conflict log: {exc}") from exc


def recent_conflicts(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The most recent ``limit`` recorded conflicts, newest first."""
    rows = conn.execute(
        "SELECT table_name, record_id, winner, loser, reason, resolved_at FROM "
        "_tablesync_conflicts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [{"table": t, "record_id": r, "winner": json.loads(w), "loser": json.loads(lo),
             "reason": why, "resolved_at": at} for t, r, w, lo, why, at in rows]
