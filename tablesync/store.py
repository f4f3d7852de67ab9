"""LocalStore: tablesync's view of the local SQLite file (queue, versions, apply, cursors).

The app writes through plain sqlite3; generated triggers fill ``sync_queue``. This module
is the facade: it owns the connection, the lock and the transactions, and delegates each
concern to the module that owns it:

* ``stamp()`` turns the triggers' wall-time stamps into HLC versions (:mod:`tablesync.stamp`),
  first thing in every transaction that reads or compares queue versions;
* ``pending()`` coalesces pending entries per record into one :class:`Change` (latest
  state; row images read in the same read transaction as the queue), ordered FK-safe, and
  ``ack()`` marks entries synced only after the server's per-row outcome
  (:mod:`tablesync.outbox`);
* ``apply_remote()`` applies server rows under the echo guard with the LWW rule, and
  ``apply_exits()`` removes records that left this system's scope (:mod:`tablesync.inbox`),
  logging every superseded concurrent write (table ``_tablesync_conflicts`` + JSON lines,
  :mod:`tablesync.conflicts`);
* ``reset()`` clears the sync state after a backup of what it discards
  (:mod:`tablesync.reset`).

Parking, queue statistics, pruning and the catch-up cursors are small enough to live here.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablesync import backfill
from tablesync.applied import Applied
from tablesync.config import Project
from tablesync.conflicts import recent_conflicts, write_conflict_log
from tablesync.errors import StoreError
from tablesync.inbox import Inbox, _Fresh, rid_of
from tablesync.localdb import CHUNK, ROWS_PER_INSERT, park, utcnow
from tablesync.migrations import WAL_NOTE, migrate
from tablesync.model import ApplyOutcome, Change
from tablesync.localdb import metas
from tablesync.outbox import DEFAULT_MAX_RETRIES, Outbox, Pending, still_pending
from tablesync.parked import ParkedRecord, list_parked
from tablesync.parked import drop as drop_parked
from tablesync.parked import retry as retry_parked
from tablesync.reset import ResetResult, db_path, reset_store
from tablesync.sql.wire import codec
from tablesync.stamp import last_stamp, needs_stamp, stamp_pending

__all__ = ["CHUNK", "DEFAULT_MAX_RETRIES", "ROWS_PER_INSERT", "LocalStore", "Pending",
           "QueueStats", "ResetResult", "_Fresh", "queue_stats", "table_counts",
           "utcnow"]   # re-exported for their users

log = logging.getLogger("tablesync.store")

BUSY_TIMEOUT = 30.0                    # seconds a write waits for another connection's lock


@dataclass(frozen=True)
class QueueStats:
    """What ``status`` shows about the local queue."""

    depth: int  # pending queue entries (not parked)
    records: int  # distinct pending records (not parked)
    oldest: str | None  # created_at of the oldest pending entry (UTC)
    parked: int  # parked records
    conflicts: int
    last_synced_at: str | None


def queue_stats(conn: sqlite3.Connection) -> QueueStats:
    """The queue's statistics, read on ``conn`` (inside the caller's read transaction)."""
    depth, records, oldest = conn.execute(
        "SELECT count(*), count(DISTINCT q.table_name || char(0) || q.record_id), "
        "datetime(min(julianday(q.created_at))) FROM sync_queue q WHERE q.synced_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM _tablesync_parked p WHERE p.table_name = q.table_name "
        "AND p.record_id = q.record_id)").fetchone()
    (parked,) = conn.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
    (conflicts,) = conn.execute("SELECT count(*) FROM _tablesync_conflicts").fetchone()
    (last,) = conn.execute("SELECT last_synced_at FROM _tablesync_state").fetchone()
    return QueueStats(depth, records, oldest, parked, conflicts, last)


def table_counts(conn: sqlite3.Connection, tables: Iterable[str]) -> dict[str, dict[str, int]]:
    """:meth:`LocalStore.table_counts` read on ``conn`` (inside the caller's read
    transaction); every name of ``tables`` is present, with zeros when idle."""
    def zero() -> dict[str, int]:
        return {"queued": 0, "queued_records": 0, "parked": 0, "refused": 0}

    out = {name: zero() for name in tables}
    for table, entries, records in conn.execute(
            "SELECT q.table_name, count(*), count(DISTINCT q.record_id) FROM "
            "sync_queue q WHERE q.synced_at IS NULL AND NOT EXISTS (SELECT 1 FROM "
            "_tablesync_parked p WHERE p.table_name = q.table_name AND "
            "p.record_id = q.record_id) GROUP BY q.table_name"):
        row = out.setdefault(table, zero())
        row["queued"], row["queued_records"] = entries, records
    for source, key in (("_tablesync_parked", "parked"), ("_tablesync_refused", "refused")):
        for table, n in conn.execute(f"SELECT table_name, count(*) FROM {source} "
                                     f"GROUP BY table_name"):
            out.setdefault(table, zero())[key] = n
    return out


class LocalStore:
    """One SQLite database, migrated to ``project``; thread-safe (one connection, a lock)."""

    def __init__(self, conn: sqlite3.Connection, project: Project, *,
                 conflict_log: Path | None = None, max_retries: int = DEFAULT_MAX_RETRIES):
        self._conn = conn
        self.project = project
        self.system_id = project.config.system.id
        self.conflict_log = conflict_log
        self.max_retries = max_retries
        self._lock = threading.RLock()
        self._specs = {t.name: t for t in project.tables}
        self._outbox = Outbox(project.tables, self.system_id)
        self._inbox = Inbox(project.tables, self.system_id, self._outbox)
        with self._lock:
            self._backfill_open = backfill.active(conn, project.tables)

    @classmethod
    def open(cls, project: Project, path: str | Path | None = None, *,
             conflict_log: Path | None = None,
             busy_timeout: float = BUSY_TIMEOUT) -> LocalStore:
        """Open (creating) the database in WAL mode and migrate it to ``project``; a write
        waits up to ``busy_timeout`` seconds for another connection's lock."""
        cfg = project.config
        db = Path(path) if path is not None else cfg.database_path
        log_path = conflict_log or cfg.resolve_path(cfg.paths.conflict_log)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            existed = db.exists() and db.stat().st_size > 0     # the app's own database
            conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout)
            old = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            new = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            steps = migrate(conn, project)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{db}: cannot open the local database: {exc}") from exc
        if existed:     # an app embedding the engine hears of every change, as the CLI does
            wal = [WAL_NOTE.format(old=old, name=db.name)] if old != new == "wal" else []
            for step in wal + steps:
                log.warning("tablesync changed %s: %s", db, step)
        return cls(conn, project, conflict_log=log_path,
                   max_retries=cfg.sync.max_retries)

    @property
    def path(self) -> Path | None:
        """The database file (None for an in-memory database)."""
        with self._lock:
            rows = self._conn.execute("PRAGMA database_list").fetchall()
        file = next((f for _seq, name, f in rows if name == "main"), "")
        return Path(file) if file else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _tx(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute(f"BEGIN {mode}")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction: {exc}") from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    # -- stamping -------------------------------------------------------------------------

    def stamp(self) -> int:
        """Give new queue entries their HLC versions now; how many were stamped."""
        with self._lock:
            if not needs_stamp(self._conn):
                return 0
            with self._tx() as conn:
                return stamp_pending(conn)

    # -- pending changes and acknowledgement (tablesync.outbox) --------------------------

    def pending(self, limit: int | None = None,
                skip: Collection[tuple[str, str]] = (),
                skip_tables: Collection[str] = ()) -> Pending:
        """Pending records coalesced to their latest state, in FK-safe push order.

        Deletes come first, children before parents; then upserts parents before
        children, UPDATE before INSERT within a table; ties by first queue id. A delete
        of a record the server never acknowledged (inserted and deleted before a push)
        travels with the upserts, after the table's INSERTs: the server may not hold it,
        so its tombstone is an insert that needs its parents first.
        With ``limit``: the (at most) ``limit`` records whose first pending entry is
        oldest, read with a bounded scan from the oldest pending entry (memory and time
        do not grow with the queue's length), ordered as above within that chunk.
        Records in ``skip`` ((table, record id) pairs) are left out like parked ones and
        do not count towards ``limit`` (the push skips records still in flight), as are
        entries of tables that are not synced (any more) and of ``skip_tables`` (held
        while the server lacks the table or a column: docs/backfill.md). ``more`` on the result: the
        limit was reached, so pending records may be left unread.
        """
        self.stamp()
        with self._tx("DEFERRED") as conn:
            changes, unknown, more = self._outbox.read(conn, limit, skip, skip_tables)
        return self._outbox.order(changes, unknown, more)

    def ack(self, changes: Sequence[Change],
            outcomes: Sequence[ApplyOutcome | Mapping[str, Any]]) -> list[Change]:
        """Record the server's per-row outcomes; return remote rows applied locally.

        applied/duplicate: entries marked synced, the version recorded, last_synced_at set.
        superseded: entries marked synced, the loss logged if concurrent, the server's row
        applied locally at once. forbidden: the record is parked. error: retry_count+1,
        parked after ``max_retries``. Outcomes of entries settled meanwhile (the record
        left the scope, or a remote version superseded it, while the push was in flight)
        park nothing.
        """
        if len(changes) != len(outcomes):
            raise StoreError(f"ack: {len(changes)} changes but {len(outcomes)} outcomes")
        with self._tx() as conn:
            winners, logged = self._outbox.ack(conn, changes, outcomes, self.max_retries)
        self._write_conflict_log(logged)
        applied: list[Change] = []
        for table, rows in winners.items():
            applied += self.apply_remote(table, rows)
        return applied

    def restamp(self, changes: Sequence[tuple[Change, int]]) -> int:
        """Give the pending entries of each change new versions from ``server_hlc`` (the
        server's clock, which refused the change's version as too far ahead of it): above
        it and above the record's stored version, in queue order. How many records."""
        n = 0
        with self._tx() as conn:
            stamp_pending(conn)
            open_ids = still_pending(conn, [ch for ch, _server in changes])
            for ch, server in changes:
                ids = sorted(open_ids.intersection(ch.queue_ids))
                if not ids:
                    continue
                meta = metas(conn, ch.table, [ch.record_id]).get(ch.record_id)
                start = max(server, meta.version.hlc if meta else 0) + 1
                conn.executemany("UPDATE sync_queue SET hlc = ? WHERE id = ?",
                                 [(start + i, qid) for i, qid in enumerate(ids)])
                n += 1
        return n

    def park_changes(self, changes: Sequence[Change], reason: str) -> int:
        """Park the records of ``changes`` whose entries are still pending (a batch refused
        as a whole); how many were parked."""
        with self._tx() as conn:
            return self._outbox.park_changes(conn, changes, reason)

    # -- applying remote rows and exits (tablesync.inbox) --------------------------------

    def apply_remote(self, table: str, rows: Iterable[Mapping[str, Any]]) -> Applied:
        """Apply server rows (LWW against local state) under the echo guard, atomically.

        Returns the changes actually applied to the local table (for callbacks; rows of
        the bulk path become ``Change`` objects only when read). Versions and row existence
        are read for the whole batch at once; pending entries are only scanned when the
        queue holds any. Records with no local version, no pending entry and no earlier row
        in this batch ("fresh": nothing to compare with) are written in bulk, one
        ``executemany`` per run; every other row goes through ``Inbox._apply_one``.
        """
        spec = self._specs.get(table)
        if spec is None:
            raise StoreError(f"apply_remote: table {table!r} is not synced")
        rows = rows if isinstance(rows, list) else list(rows)
        wire = codec(spec)
        if not wire.identity:               # JSON values, bytea hex, booleans: local form
            rows = [wire.to_local(row) for row in rows]
        rids = [rid_of(spec, row) for row in rows]
        try:
            with self._tx() as conn:
                applied, logged = self._inbox.apply_rows(conn, spec, rows, rids)
        except (sqlite3.Error, OverflowError) as exc:  # rolled back: nothing applied
            raise StoreError(f"apply_remote {table}: the local database refused the rows: "
                             f"{exc}") from exc
        except (TypeError, ValueError) as exc:
            raise StoreError(f"apply_remote {table}: malformed version columns: "
                             f"{exc}") from exc
        self._write_conflict_log(logged)
        return applied

    def apply_exits(self, exits: Iterable[Mapping[str, Any]],
                    returned: Mapping[tuple[str, str], int] | None = None
                    ) -> tuple[list[Change], list[str]]:
        """Apply records that left this system's scope on the server (rows of
        ``tablesync_exits``: ``table_name``, ``record_id``, ``_ts_hlc``, ``_ts_origin``,
        the record's version after the move).

        The local copy is removed under the echo guard (nothing is queued) and its stored
        version forgotten, so a later return is pulled as a new record, unless the stored
        version is newer than the move (the record came back and was pulled since). Local
        changes still pending for a removed record cannot be pushed any more (the server
        no longer lets this system write it): they are kept in the conflict log (table and
        JSON lines, with the local row) and their queue entries closed, and a parked mark
        is cleared. ``returned``: the highest ``_ts_seq`` of each (table, record id) pulled
        by the same catch-up; an exit with a lower ``_ts_seq`` is older than a row of the
        record this system saw since (it came back), and is ignored, even when a newer
        local write won over that row (so no stored version shows the return). Returns the
        removals (DELETE changes, for callbacks) and one message per malformed exit row
        (skipped; the others still apply). Idempotent.
        """
        valid, rejected = self._inbox.check_exits(exits, returned)
        if not valid:
            return [], rejected
        try:
            with self._tx() as conn:
                removed, logged = self._inbox.apply_exits(conn, valid)
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(f"apply_exits: the local database refused the removals: "
                             f"{exc}") from exc
        self._write_conflict_log(logged)
        return removed, rejected

    # -- conflicts (tablesync.conflicts) -------------------------------------------------

    def _write_conflict_log(self, entries: list[dict[str, Any]]) -> None:
        write_conflict_log(self.conflict_log, entries)

    def conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent conflicts, newest first."""
        with self._lock:
            return recent_conflicts(self._conn, limit)

    # -- parking, stats, cursors -----------------------------------------------------------

    def park(self, table: str, record_id: str, reason: str) -> None:
        """Hold a record's pending entries back from pushes (visible in stats)."""
        with self._tx() as conn:
            park(conn, table, record_id, reason)

    def unpark(self, table: str | None = None, record_id: str | None = None) -> int:
        """Release parked records (all, a table's, or one) and reset their retry counts."""
        where, args = "1", []
        if table is not None:
            where, args = "table_name = ?", [table]
            if record_id is not None:
                where, args = where + " AND record_id = ?", args + [record_id]
        with self._tx() as conn:
            conn.execute(f"UPDATE sync_queue SET retry_count = 0 WHERE synced_at IS NULL AND "
                         f"(table_name, record_id) IN (SELECT table_name, record_id FROM "
                         f"_tablesync_parked WHERE {where})", args)
            return conn.execute(f"DELETE FROM _tablesync_parked WHERE {where}", args).rowcount

    def refuse(self, table: str, record_id: str, reason: str,
               row: Mapping[str, Any] | None, seq: int | None = None) -> None:
        """Record a server row this replica could not apply (``row``: its image, retried
        by :meth:`refused`'s user; None when there is nothing to retry with)."""
        hlc = row.get("_ts_hlc") if row is not None else None
        image = None
        if row is not None:
            try:
                image = json.dumps(dict(row), allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError):
                image = None
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO _tablesync_refused (table_name, record_id, seq, hlc, reason, row, "
                "refused_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (table_name, record_id) "
                "DO UPDATE SET seq = excluded.seq, hlc = excluded.hlc, reason = excluded.reason, "
                "row = coalesce(excluded.row, row), tries = tries + 1, "
                "refused_at = excluded.refused_at",
                (table, record_id, seq if type(seq) is int else None,
                 hlc if type(hlc) is int and -2**63 <= hlc < 2**63 else None,
                 reason[:1000], image, utcnow()))

    def refused(self) -> list[dict[str, Any]]:
        """Refused server rows: table, record_id, seq, reason, tries, refused_at, row (the
        image as a dict, or None)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT table_name, record_id, seq, reason, tries, refused_at, row FROM "
                "_tablesync_refused ORDER BY table_name, seq").fetchall()
        return [{"table": t, "record_id": r, "seq": q, "reason": why, "tries": n,
                 "refused_at": at, "row": json.loads(img) if img else None}
                for t, r, q, why, n, at, img in rows]

    def settle_refused(self, table: str, record_ids: Collection[str]) -> int:
        """Forget refused rows of ``record_ids`` (applied since, or superseded)."""
        ids = list(record_ids)
        with self._tx() as conn:
            n = 0
            for i in range(0, len(ids), CHUNK):
                part = ids[i:i + CHUNK]
                n += conn.execute(
                    f"DELETE FROM _tablesync_refused WHERE table_name = ? AND record_id IN "
                    f"({','.join('?' * len(part))})", (table, *part)).rowcount
            return n

    def parked(self) -> list[dict[str, str]]:
        with self._lock:
            rows = self._conn.execute("SELECT table_name, record_id, reason, parked_at FROM "
                                      "_tablesync_parked ORDER BY parked_at").fetchall()
        return [{"table": t, "record_id": r, "reason": why, "parked_at": at}
                for t, r, why, at in rows]

    def parked_records(self, limit: int = 1000) -> list[ParkedRecord]:
        """Parked pushes and refused pulls with their reasons (:mod:`tablesync.parked`)."""
        with self._tx("DEFERRED") as conn:
            return list_parked(conn, limit, self._specs)

    def retry_parked(self, table: str, record_id: str, kind: str | None = None) -> int:
        """Release one parked/refused record (:func:`tablesync.parked.retry`)."""
        with self._tx() as conn:
            return retry_parked(conn, table, record_id, kind)

    def drop_parked(self, table: str, record_id: str, backup_dir: Path | None = None,
                    kind: str | None = None) -> Path:
        """Give one parked/refused record up after a 0600 backup (default folder: next to
        the database); the backup's path (:func:`tablesync.parked.drop`)."""
        with self._tx() as conn:
            folder = backup_dir if backup_dir is not None else Path(db_path(conn)).parent
            path = drop_parked(conn, table, record_id, folder, self._specs, kind)
        log.warning("dropped parked record %s %r; backup in %s", table, record_id, path)
        return path

    def table_counts(self) -> dict[str, dict[str, int]]:
        """Per synced table: pending entries and records not parked (``queued``,
        ``queued_records``), parked records and refused server rows."""
        with self._tx("DEFERRED") as conn:
            return table_counts(conn, self._specs)

    def stats(self) -> QueueStats:
        with self._tx("DEFERRED") as conn:
            return queue_stats(conn)

    # -- backfill of rows that predate sync (tablesync.backfill) --------------------------

    def backfill_step(self, limit: int | None = None,
                      skip_tables: Collection[str] = ()) -> int:
        """Queue the next chunk of rows that existed before their table was synced (see
        :mod:`tablesync.backfill`); how many rows were queued. Tables in ``skip_tables``
        (held: the server lacks them) and the tables after them wait."""
        with self._lock:
            if not self._backfill_open:
                return 0
            tables = []
            for spec in self.project.tables:
                if spec.name in skip_tables:
                    break                   # FK order: nothing after a held table
                tables.append(spec)
            with self._tx() as conn:
                n = backfill.step(conn, tables, self.system_id,
                                  limit or backfill.BACKFILL_CHUNK)
                self._backfill_open = backfill.active(conn, self.project.tables)
            return n

    @property
    def backfilling(self) -> bool:
        """Whether some table still has pre-existing rows to queue (or was not looked at)."""
        return self._backfill_open

    def backfill_progress(self) -> dict[str, dict[str, Any]]:
        """Per table: done, total, rate, eta_s, finished, other_scope, other_keys."""
        with self._tx("DEFERRED") as conn:
            return backfill.progress(conn)

    def note_synced(self) -> None:
        """A sync cycle completed: both sides were in step at this moment."""
        with self._tx() as conn:
            conn.execute("UPDATE _tablesync_state SET last_synced_at = ?", (utcnow(),))

    def prune(self, older_than_s: float, limit: int = 50_000) -> int:
        """Delete at most ``limit`` entries pushed more than ``older_than_s`` ago.

        Never the newest entry (queue ids must keep growing: no AUTOINCREMENT), never an
        unsynced or unstamped one."""
        cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - older_than_s))
        with self._tx() as conn:
            return conn.execute(
                "DELETE FROM sync_queue WHERE id IN (SELECT id FROM sync_queue WHERE "
                "synced_at IS NOT NULL AND synced_at < ? AND id < (SELECT max(id) FROM "
                "sync_queue) AND id <= coalesce((SELECT stamped_id FROM _tablesync_stamp), 0) "
                "ORDER BY id LIMIT ?)", (cutoff, limit)).rowcount

    def get_cursor(self, table: str) -> tuple[int, int]:
        """(cursor, last seq) of the catch-up pull for ``table``; (0, 0) initially."""
        with self._lock:
            row = self._conn.execute("SELECT cursor, last_seq FROM _tablesync_cursors WHERE "
                                     "table_name = ?", (table,)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_cursor(self, table: str, cursor: int, last_seq: int = 0) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO _tablesync_cursors (table_name, cursor, "
                         "last_seq, updated_at) VALUES (?, ?, ?, ?)",
                         (table, cursor, last_seq, utcnow()))

    # -- reset (tablesync.reset) ---------------------------------------------------------

    def reset(self, *, discard_pending: bool = False,
              backup_dir: Path | None = None) -> ResetResult:
        """Clear the queue and all sync state so the next catch-up re-reads everything.

        The newest queue entry stays, marked synced, so queue ids keep growing (the
        queue has no AUTOINCREMENT; see :mod:`tablesync.sql.sqlite`).

        Refuses (:class:`StoreError`) while unsynced entries exist unless
        ``discard_pending``; then they are first written to a 0600 JSON lines backup file
        (one object per entry with the record's current local row) in ``backup_dir``
        (default: next to the database). Records whose discarded changes the server never
        acknowledged are deleted locally (they are in the backup); the others are
        overwritten by the catch-up. Cursors, versions and parked records are cleared;
        conflicts and the local clock are kept.
        """
        with self._tx() as conn:
            result = reset_store(conn, self._specs, discard_pending=discard_pending,
                                 max_clock_skew=self.project.config.sync.max_clock_skew,
                                 backup_dir=backup_dir)
        log.warning("reset: queue cleared (%d unsynced entries discarded), cursors reset",
                    result.discarded)
        return result

    @property
    def replica_id(self) -> str:
        """This database's replica id (random, created with tablesync's own tables)."""
        with self._lock:
            (rid,) = self._conn.execute("SELECT replica_id FROM _tablesync_replica").fetchone()
        return str(rid)

    @property
    def clock(self) -> int:
        """The highest HLC seen or stamped locally."""
        with self._lock:
            self.stamp()
            (hlc,) = self._conn.execute("SELECT hlc FROM _tablesync_state").fetchone()
            return max(int(hlc), last_stamp(self._conn))
