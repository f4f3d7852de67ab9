"""A status snapshot read from the local store (``sync status`` with no engine running,
and the store half of a running engine's snapshot)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tablesync.machine import State
from tablesync.status import StatusSnapshot
from tablesync.store import LocalStore, QueueStats

__all__ = ["store_snapshot"]


def store_snapshot(store: LocalStore, system_id: str, *, state: str = State.STOPPED.label,
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


def _conflicts_since(store: LocalStore, since: str, first: int = 100,
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

