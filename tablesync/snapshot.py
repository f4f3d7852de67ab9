"""A status snapshot read from the local store (``sync status`` with no engine running,
and the store half of a running engine's snapshot).

A running engine reads through :class:`StatusReader`: its own read-only connection with a
short busy timeout, never the store's lock, so the status API answers at once while the
store waits on a locked database; when even that read cannot be done, the counts of the
last good read are served again, marked ``stale``.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from tablesync.conflicts import recent_conflicts
from tablesync.machine import State
from tablesync.status import StatusSnapshot
from tablesync.config import Project
from tablesync.store import QueueStats, queue_stats, table_counts

__all__ = ["READ_BUSY_TIMEOUT", "StatusReader", "StoreCounts", "store_snapshot"]

READ_BUSY_TIMEOUT = 0.03               # seconds a status read waits for a lock


class StoreCounts(Protocol):
    """What a snapshot reads: :class:`~tablesync.store.LocalStore` or :class:`StatusReader`."""

    project: Project

    def stats(self) -> QueueStats: ...

    def conflicts(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def table_counts(self) -> dict[str, dict[str, int]]: ...


class StatusReader:
    """The status half of the store on a private read-only connection (thread-safe)."""

    def __init__(self, path: str | Path, project: Project,
                 busy_timeout: float = READ_BUSY_TIMEOUT) -> None:
        self.path, self.project, self.busy_timeout = Path(path), project, busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._last: StatusSnapshot | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=self.busy_timeout, check_same_thread=False,
                                   isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._conn = conn
        return self._conn

    def stats(self) -> QueueStats:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return queue_stats(conn)
            finally:
                conn.execute("COMMIT")

    def conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return recent_conflicts(self._connection(), limit)

    def table_counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return table_counts(conn, [t.name for t in self.project.tables])
            finally:
                conn.execute("COMMIT")

    def snapshot(self, system_id: str, **live: Any) -> StatusSnapshot:
        """:func:`store_snapshot` through this reader; if the database cannot be read now
        (locked, busy), the last good snapshot's store counts with ``live`` and
        ``stale=True`` (raises only when there has never been a good read)."""
        try:
            snap = store_snapshot(self, system_id, **live)
        except sqlite3.Error:
            if self._last is None:
                raise
            return replace(self._last, stale=True, generated_at=_now_iso(), **live)
        self._last = snap
        return snap

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def store_snapshot(store: StoreCounts, system_id: str, *, state: str = State.STOPPED.label,
                   engine_alive: bool = False, **live: Any) -> StatusSnapshot:
    """A status snapshot from the local store (plus live engine fields when given)."""
    stats: QueueStats = store.stats()
    now = datetime.now(timezone.utc)
    day_ago = (now - timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")
    recent = _conflicts_since(store, day_ago)
    oldest = _iso(stats.oldest)
    age = None
    if oldest is not None:
        age = max(0.0, (now - datetime.fromisoformat(oldest.replace("Z", "+00:00")))
                  .total_seconds())
    tables = store.table_counts()
    sb = store.project.config.supabase
    return StatusSnapshot(
        backend_url=sb.url if sb is not None else None, tables=tables,
        refused=sum(t["refused"] for t in tables.values()),
        system_id=system_id, state=state, engine_alive=engine_alive,
        queue_depth=stats.depth, oldest_queued_at=oldest, oldest_queued_age_s=age,
        last_sync_at=_iso(stats.last_synced_at), parked=stats.parked, conflicts_24h=recent,
        generated_at=now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", **live)


def _iso(sqlite_utc: str | None) -> str | None:
    """'YYYY-MM-DD HH:MM:SS[.mmm]' (SQLite UTC) -> ISO-8601 with Z."""
    if not sqlite_utc:
        return None
    text = str(sqlite_utc).strip().replace(" ", "T")
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    return text + "Z"


def _conflicts_since(store: StoreCounts, since: str, first: int = 100,
                     cap: int = 100_000) -> int:
    """How many conflicts were resolved at or after ``since`` (newest-first reads, growing
    the window only while the oldest row read is still recent)."""
    limit = first
    while True:
        rows = store.conflicts(limit)
        recent = sum(1 for c in rows if str(c["resolved_at"]) >= since)
        if len(rows) < limit or recent < len(rows) or limit >= cap:
            return recent
        limit *= 4

