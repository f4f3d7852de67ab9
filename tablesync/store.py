"""LocalStore: tablesync's view of the local SQLite file (queue, versions, apply, cursors).

The app writes through plain sqlite3; generated triggers fill ``sync_queue``. This store:

* ``pending()`` coalesces pending entries per record into one :class:`Change` (latest
  state; row images read in the same read transaction as the queue), ordered FK-safe;
* ``ack()`` marks entries synced only after the server's per-row outcome;
* ``apply_remote()`` applies server rows under the echo guard with :func:`lww.resolve`,
  logging every superseded concurrent write (table ``_tablesync_conflicts`` + JSON lines).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablesync import lww
from tablesync.errors import StoreError
from tablesync.migrations import migrate
from tablesync.model import ZERO, Change, Op, RowState, TableSpec, Version
from tablesync.project import Project
from tablesync.rows import state_from_row, state_json, version_text
from tablesync.sql.base import ident

log = logging.getLogger("tablesync.store")
CHUNK = 500
DEFAULT_MAX_RETRIES = 5


@dataclass(frozen=True)
class QueueStats:
    """What ``status`` shows about the local queue."""

    depth: int  # pending queue entries (not parked)
    records: int  # distinct pending records (not parked)
    oldest: str | None  # created_at of the oldest pending entry (UTC)
    parked: int  # parked records
    conflicts: int
    last_synced_at: str | None


@dataclass
class _Entry:
    id: int
    op: str
    hlc: int
    data: str | None


def utcnow() -> str:
    """UTC timestamp in SQLite's CURRENT_TIMESTAMP style plus milliseconds."""
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _q(name: str) -> str:
    return ident(name, "sqlite")


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
        self._rank = {t.name: i for i, t in enumerate(project.tables)}

    @classmethod
    def open(cls, project: Project, path: str | Path | None = None, *,
             conflict_log: Path | None = None) -> LocalStore:
        """Open (creating) the database in WAL mode and migrate it to ``project``."""
        cfg = project.config
        db = Path(path) if path is not None else cfg.database_path
        log_path = conflict_log or cfg.resolve_path(cfg.paths.conflict_log)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA busy_timeout = 30000")
            migrate(conn, project)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{db}: cannot open the local database: {exc}") from None
        return cls(conn, project, conflict_log=log_path,
                   max_retries=cfg.sync.max_retries)

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
                raise StoreError(f"cannot start a transaction: {exc}") from None
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    # -- pending changes ----------------------------------------------------------------

    def pending(self, limit: int | None = None) -> list[Change]:
        """Pending records coalesced to their latest state, in FK-safe push order.

        Deletes come first, children before parents; then upserts parents before
        children, UPDATE before INSERT within a table; ties by first queue id.
        """
        with self._tx("DEFERRED") as conn:
            groups = self._pending_groups(conn)
            changes = []
            for table, recs in groups.items():
                spec = self._specs.get(table)
                if spec is not None:
                    changes += self._coalesce(conn, spec, recs)
        changes.sort(key=self._order)
        return changes[:limit] if limit is not None else changes

    def _pending_groups(self, conn: sqlite3.Connection) -> dict[str, dict[str, list[_Entry]]]:
        rows = conn.execute(
            "SELECT q.id, q.table_name, q.record_id, q.operation, q.hlc, q.record_data "
            "FROM sync_queue q WHERE q.synced_at IS NULL AND NOT EXISTS (SELECT 1 FROM "
            "_tablesync_parked p WHERE p.table_name = q.table_name AND p.record_id = "
            "q.record_id) ORDER BY q.id")
        groups: dict[str, dict[str, list[_Entry]]] = {}
        for qid, table, rid, op, hlc, data in rows:
            groups.setdefault(table, {}).setdefault(rid, []).append(_Entry(qid, op, hlc, data))
        return groups

    def _coalesce(self, conn: sqlite3.Connection, spec: TableSpec,
                  recs: dict[str, list[_Entry]]) -> list[Change]:
        metas = self._metas(conn, spec.name, list(recs))
        images = self._images(conn, spec, [r for r, es in recs.items() if es[-1].op != "DELETE"])
        out = []
        for rid, entries in recs.items():
            meta = metas.get(rid)
            last = entries[-1]
            if last.op == "DELETE":
                data = json.loads(last.data) if last.data else {}
                deleted = True
            elif rid in images:
                data, deleted = images[rid], False
            else:
                continue  # the row vanished without a captured delete; nothing to push
            state = RowState(Version(max(e.hlc for e in entries), self.system_id), deleted,
                             self._held_before(entries, meta), data)
            op = Op.DELETE if deleted else (
                Op.INSERT if meta is None or meta.deleted else Op.UPDATE)
            out.append(Change(spec.name, rid, op, state, tuple(e.id for e in entries)))
        return out

    def _order(self, ch: Change) -> tuple[int, int, int, int]:
        rank = self._rank[ch.table]
        first = ch.queue_ids[0] if ch.queue_ids else 0
        if ch.op is Op.DELETE:
            return (0, -rank, 0, first)
        return (1, rank, 0 if ch.op is Op.UPDATE else 1, first)

    def _metas(self, conn: sqlite3.Connection, table: str,
               rids: Sequence[str]) -> dict[str, RowState]:
        out: dict[str, RowState] = {}
        for i in range(0, len(rids), CHUNK):
            part = rids[i:i + CHUNK]
            marks = ",".join("?" * len(part))
            for rid, hlc, origin, deleted, bh, bo in conn.execute(
                    "SELECT record_id, hlc, origin, deleted, base_hlc, base_origin FROM "
                    f"_tablesync_meta WHERE table_name = ? AND record_id IN ({marks})",
                    (table, *part)):
                out[rid] = RowState(Version(hlc, origin), bool(deleted), Version(bh, bo))
        return out

    def _images(self, conn: sqlite3.Connection, spec: TableSpec,
                rids: Sequence[str]) -> dict[str, dict[str, Any]]:
        cols = spec.column_names
        select = ", ".join(_q(c) for c in cols)
        pk = _q(spec.primary_key)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(rids), CHUNK):
            part = rids[i:i + CHUNK]
            marks = ",".join("?" * len(part))
            for row in conn.execute(f"SELECT {select} FROM {_q(spec.name)} WHERE "
                                    f"{pk} IN ({marks})", part):
                data = dict(zip(cols, row))
                out[str(data[spec.primary_key])] = data
        return out

    # -- acknowledgement -----------------------------------------------------------------

    def ack(self, changes: Sequence[Change],
            outcomes: Sequence[Mapping[str, Any]]) -> list[Change]:
        """Record the server's per-row outcomes; return remote rows applied locally.

        applied/duplicate: entries marked synced, the version recorded, last_synced_at set.
        superseded: entries marked synced, the loss logged if concurrent, the server's row
        applied locally at once. forbidden: the record is parked. error: retry_count+1,
        parked after ``max_retries``.
        """
        if len(changes) != len(outcomes):
            raise StoreError(f"ack: {len(changes)} changes but {len(outcomes)} outcomes")
        winners: dict[str, list[Mapping[str, Any]]] = {}
        conflicts: list[tuple[str, str, RowState, RowState]] = []
        now = utcnow()
        with self._tx() as conn:
            acked = False
            for ch, out in zip(changes, outcomes):
                kind = str(out.get("outcome"))
                if kind in ("applied", "duplicate"):
                    self._mark_synced(conn, ch, now)
                    self._set_meta(conn, ch.table, ch.record_id, ch.state, only_if_newer=True)
                    acked = True
                elif kind == "superseded":
                    self._mark_synced(conn, ch, now)
                    row = out.get("row")
                    if isinstance(row, Mapping):
                        winners.setdefault(ch.table, []).append(row)
                        won = state_from_row(row, self._specs[ch.table])
                        if lww.is_concurrent(won, ch.state):
                            conflicts.append((ch.table, ch.record_id, won, ch.state))
                    acked = True
                elif kind == "forbidden":
                    self._park(conn, ch.table, ch.record_id, str(out.get("message") or kind))
                else:
                    self._retry(conn, ch, str(out.get("message") or kind))
            if acked:
                conn.execute("UPDATE _tablesync_state SET last_synced_at = ?", (now,))
            logged = [self._record_conflict(conn, *c, "pushed write superseded")
                      for c in conflicts]
        self._write_conflict_log([x for x in logged if x])
        applied: list[Change] = []
        for table, rows in winners.items():
            applied += self.apply_remote(table, rows)
        return applied

    def _mark_synced(self, conn: sqlite3.Connection, ch: Change, now: str) -> None:
        for i in range(0, len(ch.queue_ids), CHUNK):
            part = ch.queue_ids[i:i + CHUNK]
            conn.execute(f"UPDATE sync_queue SET synced_at = ? WHERE id IN "
                         f"({','.join('?' * len(part))})", (now, *part))

    def _retry(self, conn: sqlite3.Connection, ch: Change, message: str) -> None:
        ids = ch.queue_ids[:CHUNK]
        marks = ",".join("?" * len(ids))
        conn.execute(f"UPDATE sync_queue SET retry_count = retry_count + 1, last_error = ? "
                     f"WHERE id IN ({marks})", (message, *ids))
        (tries,) = conn.execute(f"SELECT max(retry_count) FROM sync_queue WHERE id IN "
                                f"({marks})", ids).fetchone()
        if (tries or 0) >= self.max_retries:
            self._park(conn, ch.table, ch.record_id, f"after {tries} tries: {message}")

    # -- applying remote rows ------------------------------------------------------------

    def apply_remote(self, table: str, rows: Iterable[Mapping[str, Any]]) -> list[Change]:
        """Apply server rows (LWW against local state) under the echo guard, atomically.

        Returns the changes actually applied to the local table (for callbacks).
        """
        spec = self._specs.get(table)
        if spec is None:
            raise StoreError(f"apply_remote: table {table!r} is not synced")
        rows = list(rows)
        applied: list[Change] = []
        logged: list[dict[str, Any]] = []
        with self._tx() as conn:
            conn.execute("UPDATE _tablesync_state SET applying = 1")
            pend = self._pending_groups(conn).get(table, {})
            top = 0
            for row in rows:
                remote = state_from_row(row, spec)
                top = max(top, remote.version.hlc)
                result = self._apply_one(conn, spec, remote, pend)
                if result is not None:
                    change, conflict = result
                    applied += [change] if change else []
                    logged += [conflict] if conflict else []
            conn.execute("UPDATE _tablesync_state SET applying = 0, hlc = max(hlc, ?)", (top,))
        self._write_conflict_log(logged)
        return applied

    def _apply_one(self, conn: sqlite3.Connection, spec: TableSpec, remote: RowState,
                   pend: dict[str, list[_Entry]]
                   ) -> tuple[Change | None, dict[str, Any] | None] | None:
        rid = str(remote.data.get(spec.primary_key, ""))
        if not rid:
            raise StoreError(f"apply_remote: a {spec.name} row has no {spec.primary_key}")
        local = self._local_state(conn, spec, rid, pend.get(rid))
        policy = spec.on_delete_conflict
        # Writes from one origin are causally ordered: our own write echoed back is
        # never a conflict with our later writes.
        foreign = remote.version.origin != self.system_id
        if local is not None and not lww.beats(remote, local, policy):
            conflict = None
            if foreign and local.version != remote.version and lww.is_concurrent(local, remote):
                conflict = self._record_conflict(conn, spec.name, rid, local, remote,
                                                 "remote write superseded by local")
            return None, conflict
        conflict = None
        if local is not None and foreign and lww.is_concurrent(remote, local):
            conflict = self._record_conflict(conn, spec.name, rid, remote, local,
                                             "local write superseded by remote")
        if local is not None and local.deleted and not remote.deleted:
            log.warning("edit-wins: %s %s restored by a concurrent remote edit", spec.name, rid)
        op = self._write_row(conn, spec, rid, remote)
        if pend.pop(rid, None):
            conn.execute("DELETE FROM sync_queue WHERE synced_at IS NULL AND table_name = ? "
                         "AND record_id = ?", (spec.name, rid))
        self._set_meta(conn, spec.name, rid, remote)
        return Change(spec.name, rid, op, remote), conflict

    def _held_before(self, entries: list[_Entry], meta: RowState | None) -> Version:
        """The version the local copy held before the latest pending write: the previous
        pending write (acknowledged or not, it was this copy's state), else the meta."""
        if len(entries) >= 2:
            return Version(entries[-2].hlc, self.system_id)
        return meta.version if meta else ZERO

    def _local_state(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                     entries: list[_Entry] | None) -> RowState | None:
        meta = self._metas(conn, spec.name, [rid]).get(rid)
        if entries:
            last = entries[-1]
            deleted = last.op == "DELETE"
            data = (json.loads(last.data) if deleted and last.data
                    else self._images(conn, spec, [rid]).get(rid, {}))
            return RowState(Version(max(e.hlc for e in entries), self.system_id), deleted,
                            self._held_before(entries, meta), data)
        if meta is None:
            return None
        data = self._images(conn, spec, [rid]).get(rid, {})
        return RowState(meta.version, meta.deleted, meta.base, data)

    def _write_row(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                   remote: RowState) -> Op:
        t, pk = _q(spec.name), _q(spec.primary_key)
        exists = conn.execute(f"SELECT 1 FROM {t} WHERE {pk} = ?",
                              (rid,)).fetchone() is not None
        if remote.deleted:
            conn.execute(f"DELETE FROM {t} WHERE {pk} = ?", (rid,))
            return Op.DELETE
        cols = [c for c in spec.column_names if c in remote.data]
        names = ", ".join(_q(c) for c in cols)
        sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols if c != spec.primary_key)
        sql = f"INSERT INTO {t} ({names}) VALUES ({','.join('?' * len(cols))})"
        sql += f" ON CONFLICT ({pk}) DO UPDATE SET {sets}" if sets else " ON CONFLICT DO NOTHING"
        conn.execute(sql, [remote.data[c] for c in cols])
        return Op.UPDATE if exists else Op.INSERT

    def _set_meta(self, conn: sqlite3.Connection, table: str, rid: str, state: RowState,
                  only_if_newer: bool = False) -> None:
        if only_if_newer:
            cur = self._metas(conn, table, [rid]).get(rid)
            if cur is not None and not lww.beats(state, cur, self._specs[table].on_delete_conflict):
                return
        conn.execute(
            "INSERT OR REPLACE INTO _tablesync_meta (table_name, record_id, hlc, origin, "
            "deleted, base_hlc, base_origin) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (table, rid, state.version.hlc, state.version.origin, int(state.deleted),
             state.base.hlc, state.base.origin))

    # -- conflicts -----------------------------------------------------------------------

    def _record_conflict(self, conn: sqlite3.Connection, table: str, rid: str,
                         winner: RowState, loser: RowState, reason: str
                         ) -> dict[str, Any] | None:
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

    def _write_conflict_log(self, entries: list[dict[str, Any]]) -> None:
        if not entries or self.conflict_log is None:
            return
        try:
            self.conflict_log.parent.mkdir(parents=True, exist_ok=True)
            with self.conflict_log.open("a", encoding="utf-8") as fh:
                for e in entries:
                    fh.write(json.dumps(e, default=str, sort_keys=True) + "\n")
        except OSError as exc:
            raise StoreError(f"{self.conflict_log}: cannot write the conflict log: {exc}") from None

    def conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent conflicts, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT table_name, record_id, winner, loser, reason, resolved_at FROM "
                "_tablesync_conflicts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"table": t, "record_id": r, "winner": json.loads(w), "loser": json.loads(lo),
                 "reason": why, "resolved_at": at} for t, r, w, lo, why, at in rows]

    # -- parking, stats, cursors -----------------------------------------------------------

    def _park(self, conn: sqlite3.Connection, table: str, rid: str, reason: str) -> None:
        conn.execute("INSERT OR REPLACE INTO _tablesync_parked (table_name, record_id, reason, "
                     "parked_at) VALUES (?, ?, ?, ?)", (table, rid, reason, utcnow()))

    def park(self, table: str, record_id: str, reason: str) -> None:
        """Hold a record's pending entries back from pushes (visible in stats)."""
        with self._tx() as conn:
            self._park(conn, table, record_id, reason)

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

    def parked(self) -> list[dict[str, str]]:
        with self._lock:
            rows = self._conn.execute("SELECT table_name, record_id, reason, parked_at FROM "
                                      "_tablesync_parked ORDER BY parked_at").fetchall()
        return [{"table": t, "record_id": r, "reason": why, "parked_at": at}
                for t, r, why, at in rows]

    def stats(self) -> QueueStats:
        with self._tx("DEFERRED") as conn:
            depth, records, oldest = conn.execute(
                "SELECT count(*), count(DISTINCT q.table_name || char(0) || q.record_id), "
                "min(q.created_at) FROM sync_queue q WHERE q.synced_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM _tablesync_parked p WHERE p.table_name = q.table_name AND "
                "p.record_id = q.record_id)").fetchone()
            (parked,) = conn.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
            (conflicts,) = conn.execute("SELECT count(*) FROM _tablesync_conflicts").fetchone()
            (last,) = conn.execute("SELECT last_synced_at FROM _tablesync_state").fetchone()
        return QueueStats(depth, records, oldest, parked, conflicts, last)

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

    @property
    def clock(self) -> int:
        """The highest HLC seen or stamped locally."""
        with self._lock:
            (hlc,) = self._conn.execute(
                "SELECT max((SELECT hlc FROM _tablesync_state), coalesce((SELECT hlc FROM "
                "sync_queue ORDER BY id DESC LIMIT 1), 0))").fetchone()
        return int(hlc)
