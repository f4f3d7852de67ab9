"""Backfill: rows that existed before their table was synced are queued for the push.

A table becomes synced (a new install, or a table added to sync.toml) with rows the
capture triggers never saw. They are the table's rows with no stored version
(``_tablesync_meta``) and no pending queue entry. :func:`step` queues them in primary-key
order, one chunk of at most ``limit`` rows at a time, as ordinary ``INSERT`` entries whose
version is :data:`BACKFILL_HLC` (1), the lowest version there is: on the server such a row
is inserted when the record is absent and loses to any copy the server already holds (the
apply function answers ``superseded`` with the server's row, which the store adopts
locally; the push logs the difference in the conflict log). See docs/backfill.md.

State per table in ``_tablesync_backfill`` (own migration 5): rows counted at the start
(``total``), rows queued so far, the last key queued, the queue ids of the chunk in flight
and, for the status, the rows of other scopes (counted and the first keys listed; never
queued). One table at a time, in the project's (FK) order; the next chunk is queued only
when every entry of the previous one is settled (synced or parked), so a parent's rows
are on the server before its children's and the queue never holds more than one chunk.
A crash between two steps loses nothing: the chunk's entries are in the queue and the
state row was written in the same transaction.

Plain functions taking a connection, inside the caller's write transaction
(:class:`tablesync.store.LocalStore` owns the lock and the transactions).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from tablesync.localdb import quote, utcnow
from tablesync.model import BACKFILL_HLC, TableSpec
from tablesync.stamp import stamp_pending

__all__ = ["BACKFILL_CHUNK", "BACKFILL_HLC", "OTHER_KEYS_SHOWN", "active", "progress",
           "step"]

BACKFILL_CHUNK = 1000          # rows queued per step
OTHER_KEYS_SHOWN = 10          # keys of other-scope rows listed in the status


def _candidates(spec: TableSpec, where: str) -> str:
    """Rows of ``spec`` matching ``where`` with no stored version and no pending queue
    entry (``:pending``, a JSON array of record ids: rows written since sync was installed
    are pushed by their own entries)."""
    t, pk = quote(spec.name), quote(spec.primary_key)
    return (f"FROM {t} AS t WHERE {where} AND NOT EXISTS (SELECT 1 FROM _tablesync_meta m "
            f"WHERE m.table_name = :table AND m.record_id = CAST(t.{pk} AS TEXT)) AND "
            f"CAST(t.{pk} AS TEXT) NOT IN (SELECT value FROM json_each(:pending))")


def _pending(conn: sqlite3.Connection, table: str) -> str:
    return json.dumps([r[0] for r in conn.execute(
        "SELECT DISTINCT record_id FROM sync_queue WHERE synced_at IS NULL AND table_name = ?",
        (table,))])


def _start(conn: sqlite3.Connection, spec: TableSpec, system_id: str) -> None:
    """Count the table's pre-existing rows (this scope: to push; others: to show)."""
    scope, pk = quote(spec.scope), quote(spec.primary_key)
    args = {"table": spec.name, "system": system_id, "pending": _pending(conn, spec.name)}
    (total,) = conn.execute(f"SELECT count(*) {_candidates(spec, f't.{scope} = :system')}",
                            args).fetchone()
    other = f"t.{scope} IS NOT :system"
    (others,) = conn.execute(f"SELECT count(*) {_candidates(spec, other)}", args).fetchone()
    keys = [r[0] for r in conn.execute(
        f"SELECT CAST(t.{pk} AS TEXT) {_candidates(spec, other)} ORDER BY t.{pk} LIMIT "
        f"{OTHER_KEYS_SHOWN}", args)] if others else []
    now = utcnow()
    conn.execute("INSERT INTO _tablesync_backfill (table_name, total, other_scope, other_keys, "
                 "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                 (spec.name, total, others, json.dumps(keys), now, None if total else now))


def _settled(conn: sqlite3.Connection, first: int | None, last: int | None) -> bool:
    """No entry of the chunk in flight is still pending (parked ones count as settled)."""
    if first is None or last is None:
        return True
    row = conn.execute(
        "SELECT 1 FROM sync_queue q WHERE q.id BETWEEN ? AND ? AND q.synced_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM _tablesync_parked p WHERE p.table_name = q.table_name "
        "AND p.record_id = q.record_id) LIMIT 1", (first, last)).fetchone()
    return row is None


def step(conn: sqlite3.Connection, tables: Sequence[TableSpec], system_id: str,
         limit: int = BACKFILL_CHUNK) -> int:
    """Queue the next chunk of pre-existing rows, if the previous one is settled; how many
    rows were queued (0: waiting for the chunk in flight, or nothing left)."""
    states = {r[0]: r[1:] for r in conn.execute(
        "SELECT table_name, last_key, first_id, last_id, finished_at FROM _tablesync_backfill")}
    for spec in tables:                        # bounded: each table finishes or queues
        if spec.name not in states:
            _start(conn, spec, system_id)
            states[spec.name] = conn.execute(
                "SELECT last_key, first_id, last_id, finished_at FROM _tablesync_backfill "
                "WHERE table_name = ?", (spec.name,)).fetchone()
        last_key, first_id, last_id, finished = states[spec.name]
        if finished is not None:
            continue
        if not _settled(conn, first_id, last_id):
            return 0                            # one table, one chunk at a time (FK order)
        n = _queue_chunk(conn, spec, system_id, last_key, limit)
        if n:
            return n
    return 0


def _queue_chunk(conn: sqlite3.Connection, spec: TableSpec, system_id: str, last_key: Any,
                 limit: int) -> int:
    """Queue up to ``limit`` rows after ``last_key``; mark the table finished when none is
    left."""
    scope, pk = quote(spec.scope), quote(spec.primary_key)
    where = f"t.{scope} = :system" + ("" if last_key is None else f" AND t.{pk} > :last")
    rows = conn.execute(f"SELECT t.{pk}, CAST(t.{pk} AS TEXT) {_candidates(spec, where)} "
                        f"ORDER BY t.{pk} LIMIT :n",
                        {"table": spec.name, "system": system_id, "last": last_key,
                         "n": limit, "pending": _pending(conn, spec.name)}).fetchall()
    if not rows:                                # done: the total is what was queued
        conn.execute("UPDATE _tablesync_backfill SET finished_at = ?, first_id = NULL, "
                     "last_id = NULL, total = queued WHERE table_name = ?",
                     (utcnow(), spec.name))
        return 0
    last_key = rows[-1][0]
    ids = [rid for _key, rid in rows]
    stamp_pending(conn)                         # entries before ours keep their own stamps
    (first,) = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM sync_queue").fetchone()
    conn.execute("INSERT INTO sync_queue (operation, table_name, record_id, record_data, "
                 "created_at, hlc) SELECT 'INSERT', ?, value, NULL, ?, ? FROM json_each(?)",
                 (spec.name, utcnow(), BACKFILL_HLC, json.dumps(ids)))
    (last,) = conn.execute("SELECT max(id) FROM sync_queue").fetchone()
    conn.execute("UPDATE _tablesync_stamp SET stamped_id = ? WHERE id = 1", (last,))
    conn.execute("UPDATE _tablesync_backfill SET last_key = ?, first_id = ?, last_id = ?, "
                 "queued = queued + ? WHERE table_name = ?",
                 (last_key, first, last, len(ids), spec.name))
    return len(ids)


def active(conn: sqlite3.Connection, tables: Sequence[TableSpec]) -> bool:
    """Whether a table still has rows to backfill (or has not been looked at yet)."""
    done = {r[0] for r in conn.execute(
        "SELECT table_name FROM _tablesync_backfill WHERE finished_at IS NOT NULL")}
    return any(t.name not in done for t in tables)


def progress(conn: sqlite3.Connection, now: datetime | None = None
             ) -> dict[str, dict[str, Any]]:
    """Per table: rows ``done`` of ``total``, ``rate`` (rows/s since the start), ``eta_s``,
    ``finished``, and the rows of other scopes (``other_scope`` count, ``other_keys``)."""
    now = now or datetime.now(timezone.utc)
    out: dict[str, dict[str, Any]] = {}
    for (table, total, queued, first, last, others, keys, started,
         finished) in conn.execute(
            "SELECT table_name, total, queued, first_id, last_id, other_scope, other_keys, "
            "started_at, finished_at FROM _tablesync_backfill ORDER BY table_name").fetchall():
        open_n = 0
        if first is not None and last is not None:
            (open_n,) = conn.execute("SELECT count(*) FROM sync_queue WHERE id BETWEEN ? AND ? "
                                     "AND synced_at IS NULL", (first, last)).fetchone()
        done = max(0, queued - open_n)
        total = max(total, done)
        end = _parse(finished) or now
        elapsed = max(1e-3, (end - (_parse(started) or end)).total_seconds())
        rate = done / elapsed
        eta = None if finished else ((total - done) / rate if rate > 0 else None)
        out[table] = {"done": done, "total": total, "rate": round(rate, 1),
                      "eta_s": None if eta is None else round(eta, 1),
                      "finished": finished is not None, "other_scope": others,
                      "other_keys": json.loads(keys or "[]")}
    return out


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
