"""LocalStore: tablesync's view of the local SQLite file (queue, versions, apply, cursors).

The app writes through plain sqlite3; generated triggers fill ``sync_queue``. This store:

* ``stamp()`` turns the triggers' wall-time stamps into HLC versions (:mod:`tablesync.stamp`),
  first thing in every transaction that reads or compares queue versions;
* ``pending()`` coalesces pending entries per record into one :class:`Change` (latest
  state; row images read in the same read transaction as the queue), ordered FK-safe;
* ``ack()`` marks entries synced only after the server's per-row outcome;
* ``apply_remote()`` applies server rows under the echo guard with :func:`lww.resolve`,
  logging every superseded concurrent write (table ``_tablesync_conflicts`` + JSON lines).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablesync import lww
from tablesync.applied import Applied
from tablesync.errors import StoreError
from tablesync.migrations import migrate
from tablesync.model import EXITS_TABLE, ZERO, ApplyOutcome, Change, Op, RowState, TableSpec, Version
from tablesync.config import Project
from tablesync.rows import state_from_row, state_json, version_text
from tablesync.sql.base import ident
from tablesync.stamp import last_stamp, needs_stamp, stamp_pending

log = logging.getLogger("tablesync.store")
_DELETE, _INSERT, _UPDATE = Op.DELETE, Op.INSERT, Op.UPDATE   # enum lookups off hot loops
CHUNK = 500
ROWS_PER_INSERT = 100                  # value rows per multi-row INSERT of the bulk path
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


@functools.lru_cache(maxsize=4096)
def _q(name: str) -> str:
    """``name`` quoted for SQLite (through sqlglot once per name, then cached)."""
    return ident(name, "sqlite")


@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, pk: str, cols: tuple[str, ...]) -> str:
    """INSERT ... ON CONFLICT (pk) DO UPDATE of ``cols`` (cached per column set)."""
    names = ", ".join(_q(c) for c in cols)
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols if c != pk)
    sql = f"INSERT INTO {_q(table)} ({names}) VALUES ({','.join('?' * len(cols))})"
    return sql + (f" ON CONFLICT ({_q(pk)}) DO UPDATE SET {sets}" if sets
                  else " ON CONFLICT DO NOTHING")


@functools.lru_cache(maxsize=256)
def _multi_values(sql: str, n: int) -> str:
    """``sql`` (an INSERT with one ``VALUES (?, ...)`` row) with ``n`` value rows."""
    head, _, rest = sql.partition(" VALUES (")
    marks, _, tail = rest.partition(")")
    return f"{head} VALUES {', '.join([f'({marks})'] * n)}{tail}"


def _insert_rows(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``executemany(sql, rows)`` as INSERTs of up to ``ROWS_PER_INSERT`` value rows each:
    one statement step per 100 rows instead of per row (about half the CPU here)."""
    if not rows:
        return
    per = max(1, min(ROWS_PER_INSERT,
                     conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])))
    full = len(rows) - len(rows) % per
    if full:
        stmt = _multi_values(sql, per)
        for i in range(0, full, per):
            conn.execute(stmt, list(itertools.chain.from_iterable(rows[i:i + per])))
    if full < len(rows):
        conn.executemany(sql, rows[full:])


def _outcome(out: Mapping[str, Any]) -> ApplyOutcome:
    """An outcome given as a mapping (``{"outcome": ..., "row": ..., "message": ...}``)."""
    row = out.get("row")
    return ApplyOutcome(str(out.get("id") or ""), str(out.get("outcome")),
                        dict(row) if isinstance(row, Mapping) else None, out.get("message"))


def _seq(row: Mapping[str, Any]) -> int:
    seq = row.get("_ts_seq")
    return seq if type(seq) is int else 0


def _mark_synced(conn: sqlite3.Connection, ids: list[int], now: str) -> None:
    """Mark queue entries ``ids`` synced: one range UPDATE per run of consecutive ids (a
    backlog's batch is mostly one run), or one ``json_each`` UPDATE when they are
    scattered."""
    ids = sorted(set(ids))
    runs: list[tuple[int, int]] = []
    start = prev = ids[0]
    for i in ids[1:]:
        if i != prev + 1:
            runs.append((start, prev))
            start = i
        prev = i
    runs.append((start, prev))
    if len(runs) * 4 <= len(ids):
        conn.executemany("UPDATE sync_queue SET synced_at = ? WHERE id BETWEEN ? AND ?",
                         [(now, a, b) for a, b in runs])
    else:
        conn.execute("UPDATE sync_queue SET synced_at = ? WHERE id IN (SELECT value FROM "
                     "json_each(?))", (now, json.dumps(ids)))


class Pending(list):  # type: ignore[type-arg]
    """:meth:`LocalStore.pending`'s changes (a list); ``more``: pending entries were left
    unread (the limit was reached)."""

    def __init__(self, changes: Iterable[Change] = (), more: bool = False) -> None:
        super().__init__(changes)
        self.more = more


_META_UPSERT = ("INSERT OR REPLACE INTO _tablesync_meta (table_name, record_id, hlc, origin, "
                "deleted, base_hlc, base_origin) VALUES (?, ?, ?, ?, ?, ?, ?)")


class _Fresh:
    """A run of server rows for records with nothing local to compare them with (no
    version, no pending entry, not earlier in the batch): written with multi-row INSERTs
    into the table and the versions, no per-row objects (``Change`` objects are built
    by :class:`Applied` only if read)."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        cols = spec.column_names
        self.keys = frozenset(cols)              # a row needs them all (no partial rows)
        get = operator.itemgetter(*cols)
        self.values: Any = get if len(cols) > 1 else (lambda row: (get(row),))
        self.sql = _upsert_sql(spec.name, spec.primary_key, cols)
        self.rids: list[str] = []
        self.rows: list[Mapping[str, Any]] = []

    def flush(self, conn: sqlite3.Connection, applied: Applied, present: set[str]) -> int:
        """Write the run (rows, then versions), record it as applied; its highest hlc."""
        rids, rows = self.rids, self.rows
        if not rows:
            return 0
        name = self.spec.name
        hlcs = [int(r.get("_ts_hlc") or 0) for r in rows]
        _insert_rows(conn, self.sql, list(map(self.values, rows)))
        _insert_rows(conn, _META_UPSERT, [
            (name, rid, hlc, str(r.get("_ts_origin") or ""), 0,
             int(r.get("_ts_base_hlc") or 0), str(r.get("_ts_base_origin") or ""))
            for rid, r, hlc in zip(rids, rows, hlcs)])
        applied.add_rows(rids, [Op.UPDATE if rid in present else Op.INSERT for rid in rids],
                         rows)
        present.update(rids)
        self.rids, self.rows = [], []
        return max(hlcs)


@dataclass(frozen=True)
class ResetResult:
    """What :meth:`LocalStore.reset` did."""

    discarded: int  # unsynced queue entries dropped (saved in ``backup``)
    backup: Path | None  # the JSON lines file holding them (None when nothing was pending)
    removed_rows: int  # local rows of never-acknowledged inserts deleted


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
        self._low = 0  # no pending queue entry has a lower id (ids only grow)

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

    # -- stamping -------------------------------------------------------------------------

    def stamp(self) -> int:
        """Give new queue entries their HLC versions now; how many were stamped."""
        with self._lock:
            if not needs_stamp(self._conn):
                return 0
            with self._tx() as conn:
                return stamp_pending(conn)

    # -- pending changes ----------------------------------------------------------------

    def pending(self, limit: int | None = None,
                skip: Collection[tuple[str, str]] = ()) -> Pending:
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
        entries of tables that are not synced (any more). ``more`` on the result: the
        limit was reached, so pending records may be left unread.
        """
        self.stamp()
        with self._tx("DEFERRED") as conn:
            groups = self._pending_groups(conn, limit, skip)
            changes = []
            unknown: set[tuple[str, str]] = set()
            for table, recs in groups.items():
                changes += self._coalesce(conn, self._specs[table], recs, unknown)
        changes.sort(key=(lambda ch: self._order(ch, unknown)) if unknown else self._order)
        found = sum(map(len, groups.values()))
        return Pending(changes, limit is not None and found >= limit)

    def _pending_groups(self, conn: sqlite3.Connection, limit: int | None = None,
                        skip: Collection[tuple[str, str]] = (), *,
                        include_parked: bool = False
                        ) -> dict[str, dict[str, list[_Entry]]]:
        """Unparked pending entries of synced tables grouped by table and record, in queue
        order (records in ``skip`` left out like parked ones). ``include_parked``: parked
        records too (the apply paths compare remote rows with *every* pending local write:
        a parked write is still this copy's state, and must be logged, not overwritten).

        With ``limit``: entries are read from the oldest pending one until ``limit``
        records are found; the later entries of exactly those records are then added
        (one scan of the rest of the queue through an ephemeral key set)."""
        parked = (set() if include_parked else
                  set(conn.execute("SELECT table_name, record_id FROM _tablesync_parked")))
        parked.update(skip)
        specs = self._specs
        (upto,) = conn.execute("SELECT coalesce((SELECT stamped_id FROM _tablesync_stamp), "
                               "0)").fetchone()  # entries after it are not stamped yet
        cur = conn.execute(
            "SELECT id, table_name, record_id, operation, hlc, record_data FROM sync_queue "
            "WHERE id >= ? AND id <= ? AND synced_at IS NULL ORDER BY id", (self._low, upto))
        groups: dict[str, dict[str, list[_Entry]]] = {}
        found, first, last_id = 0, None, None
        for qid, table, rid, op, hlc, data in cur:
            first = qid if first is None else first
            if (table, rid) in parked or table not in specs:
                continue
            recs = groups.setdefault(table, {})
            if rid not in recs:
                if limit is not None and found >= limit:
                    break
                found += 1
                recs[rid] = []
            recs[rid].append(_Entry(qid, op, hlc, data))
            last_id = qid
        cur.close()
        if first is not None:
            self._low = max(self._low, first)
        if limit is not None and found >= limit and last_id is not None:
            self._add_later_entries(conn, groups, last_id, upto)
        return groups

    def _add_later_entries(self, conn: sqlite3.Connection,
                           groups: dict[str, dict[str, list[_Entry]]], after: int,
                           upto: int) -> None:
        # a row-value IN over json_each: about half the per-row cost of probing a
        # concatenated key (this scan reads the whole rest of the queue)
        keys = json.dumps([[t, r] for t, recs in groups.items() for r in recs])
        for qid, table, rid, op, hlc, data in conn.execute(
                "SELECT id, table_name, record_id, operation, hlc, record_data FROM sync_queue "
                "WHERE id > ? AND id <= ? AND synced_at IS NULL AND (table_name, record_id) "
                "IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM "
                "json_each(?)) ORDER BY id", (after, upto, keys)):
            groups[table][rid].append(_Entry(qid, op, hlc, data))

    def _coalesce(self, conn: sqlite3.Connection, spec: TableSpec,
                  recs: dict[str, list[_Entry]],
                  unknown: set[tuple[str, str]] | None = None) -> list[Change]:
        """One change per record (its latest state); deletes of records with no stored
        version (never acknowledged by the server) are added to ``unknown``."""
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
            ids: tuple[int, ...]
            if len(entries) == 1:               # the common case, without generators
                hlc, ids = last.hlc, (last.id,)
            else:
                hlc, ids = max(e.hlc for e in entries), tuple([e.id for e in entries])
            state = RowState(Version(hlc, self.system_id), deleted,
                             self._held_before(entries, meta), data)
            op = _DELETE if deleted else (_INSERT if meta is None or meta.deleted else _UPDATE)
            if deleted and meta is None and unknown is not None:
                unknown.add((spec.name, rid))
            out.append(Change(spec.name, rid, op, state, ids))
        return out

    def _order(self, ch: Change, unknown: Collection[tuple[str, str]] = ()
               ) -> tuple[int, int, int, int]:
        rank = self._rank[ch.table]
        first = ch.queue_ids[0] if ch.queue_ids else 0
        if ch.op is _DELETE:
            if (ch.table, ch.record_id) in unknown:
                return (1, rank, 2, first)      # a tombstone the server may not hold
            return (0, -rank, 0, first)
        return (1, rank, 0 if ch.op is _UPDATE else 1, first)

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
            outcomes: Sequence[ApplyOutcome | Mapping[str, Any]]) -> list[Change]:
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
            synced: list[int] = []
            versions: list[Change] = []
            outs = [g if isinstance(g, ApplyOutcome) else _outcome(g) for g in outcomes]
            open_ids: set[int] = set()
            if any(o.outcome not in ("applied", "duplicate", "superseded") for o in outs):
                open_ids = self._still_pending(conn, changes)
            for ch, out in zip(changes, outs):
                kind = out.outcome
                if (kind not in ("applied", "duplicate", "superseded")
                        and not open_ids.intersection(ch.queue_ids)):
                    # settled meanwhile (the record left the scope, or a remote version
                    # superseded it, while this push was in flight): nothing to park
                    continue
                if kind in ("applied", "duplicate"):
                    synced += ch.queue_ids
                    versions.append(ch)
                    acked = True
                elif kind == "superseded":
                    synced += ch.queue_ids
                    row = out.row
                    if isinstance(row, Mapping):
                        winners.setdefault(ch.table, []).append(row)
                        won = state_from_row(row, self._specs[ch.table])
                        if lww.is_concurrent(won, ch.state):
                            conflicts.append((ch.table, ch.record_id, won, ch.state))
                    acked = True
                elif kind == "forbidden":
                    self._park(conn, ch.table, ch.record_id, str(out.message or kind))
                else:
                    self._retry(conn, ch, str(out.message or kind))
            if synced:
                _mark_synced(conn, synced, now)
            self._set_metas_if_newer(conn, versions)
            if acked:
                conn.execute("UPDATE _tablesync_state SET last_synced_at = ?", (now,))
            logged = [self._record_conflict(conn, *c, "pushed write superseded")
                      for c in conflicts]
        self._write_conflict_log([x for x in logged if x])
        applied: list[Change] = []
        for table, rows in winners.items():
            applied += self.apply_remote(table, rows)
        return applied

    @staticmethod
    def _still_pending(conn: sqlite3.Connection, changes: Sequence[Change]) -> set[int]:
        """Which of ``changes``' queue ids are still unsynced."""
        ids = [i for ch in changes for i in ch.queue_ids]
        return {i for (i,) in conn.execute(
            "SELECT id FROM sync_queue WHERE synced_at IS NULL AND id IN (SELECT value FROM "
            "json_each(?))", (json.dumps(ids),))}

    def park_changes(self, changes: Sequence[Change], reason: str) -> int:
        """Park the records of ``changes`` whose entries are still pending (a batch refused
        as a whole); how many were parked."""
        with self._tx() as conn:
            open_ids = self._still_pending(conn, changes)
            n = 0
            for ch in changes:
                if open_ids.intersection(ch.queue_ids):
                    self._park(conn, ch.table, ch.record_id, reason)
                    n += 1
            return n

    def _set_metas_if_newer(self, conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
        """Record acknowledged versions (never lowering a newer one already recorded)."""
        by_table: dict[str, dict[str, Change]] = {}
        for ch in changes:
            by_table.setdefault(ch.table, {})[ch.record_id] = ch
        rows = []
        for table, recs in by_table.items():
            policy = self._specs[table].on_delete_conflict
            current = self._metas(conn, table, list(recs))
            for rid, ch in recs.items():
                cur = current.get(rid)
                if cur is None or lww.beats(ch.state, cur, policy):
                    st = ch.state
                    rows.append((table, rid, st.version.hlc, st.version.origin,
                                 int(st.deleted), st.base.hlc, st.base.origin))
        _insert_rows(conn, _META_UPSERT, rows)

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

    def apply_remote(self, table: str, rows: Iterable[Mapping[str, Any]]) -> Applied:
        """Apply server rows (LWW against local state) under the echo guard, atomically.

        Returns the changes actually applied to the local table (for callbacks; rows of
        the bulk path become ``Change`` objects only when read). Versions and row existence
        are read for the whole batch at once; pending entries are only scanned when the
        queue holds any. Records with no local version, no pending entry and no earlier row
        in this batch ("fresh": nothing to compare with) are written in bulk, one
        ``executemany`` per run; every other row goes through :meth:`_apply_one`.
        """
        spec = self._specs.get(table)
        if spec is None:
            raise StoreError(f"apply_remote: table {table!r} is not synced")
        rows = rows if isinstance(rows, list) else list(rows)
        rids = [self._rid(spec, row) for row in rows]
        try:
            applied, logged = self._apply_rows(spec, rows, rids)
        except (sqlite3.Error, OverflowError) as exc:  # rolled back: nothing applied
            raise StoreError(f"apply_remote {table}: the local database refused the rows: "
                             f"{exc}") from None
        except (TypeError, ValueError) as exc:
            raise StoreError(f"apply_remote {table}: malformed version columns: "
                             f"{exc}") from None
        self._write_conflict_log(logged)
        return applied

    def _apply_rows(self, spec: TableSpec, rows: list[Mapping[str, Any]], rids: list[str]
                    ) -> tuple[Applied, list[dict[str, Any]]]:
        table = spec.name
        applied = Applied(spec)
        logged: list[dict[str, Any]] = []
        with self._tx() as conn:
            stamp_pending(conn)  # before the observed clock moves (tablesync.stamp)
            conn.execute("UPDATE _tablesync_state SET applying = 1")
            pend = (self._pending_groups(conn, include_parked=True).get(table, {})
                    if self._any_pending(conn) else {})
            unique = list(dict.fromkeys(rids))
            metas = self._metas(conn, table, unique)
            present = self._present(conn, spec, unique)
            fresh = _Fresh(spec)
            seen: dict[str, Mapping[str, Any]] = {}   # rid -> last row written by bulk
            written: dict[str, RowState] = {}         # versions written by _apply_one
            top = 0
            keys = fresh.keys
            for rid, row in zip(rids, rows):
                if (rid not in metas and rid not in pend and rid not in seen
                        and not row.get("_ts_deleted") and row.keys() >= keys):
                    fresh.rids.append(rid)
                    fresh.rows.append(row)
                    seen[rid] = row
                    continue
                top = max(top, fresh.flush(conn, applied, present))
                if rid in seen and rid not in metas:
                    metas[rid] = state_from_row(seen[rid], spec)
                remote = state_from_row(row, spec)
                top = max(top, remote.version.hlc)
                change, conflict = self._apply_one(conn, spec, rid, remote, pend, metas,
                                                    present)
                if change is not None:
                    applied.append(change)
                    metas[rid] = written[rid] = remote
                if conflict is not None:
                    logged.append(conflict)
            top = max(top, fresh.flush(conn, applied, present))
            conn.executemany(_META_UPSERT, [
                (table, rid, st.version.hlc, st.version.origin, int(st.deleted),
                 st.base.hlc, st.base.origin) for rid, st in written.items()])
            conn.execute("UPDATE _tablesync_state SET applying = 0, hlc = max(hlc, ?)", (top,))
        return applied, logged

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
        valid: list[tuple[TableSpec, str, Version]] = []
        rejected: list[str] = []
        for i, row in enumerate(exits):
            problem, found = self._exit(row)
            if found is None:
                rejected.append(f"{EXITS_TABLE} row {i}: {problem}")
            elif returned and returned.get((found[0].name, found[1]), -1) > _seq(row):
                continue                        # it came back later: seen in this pull
            else:
                valid.append(found)
        if not valid:
            return [], rejected
        removed: list[Change] = []
        logged: list[dict[str, Any]] = []
        try:
            with self._tx() as conn:
                stamp_pending(conn)  # before the observed clock moves (tablesync.stamp)
                conn.execute("UPDATE _tablesync_state SET applying = 1")
                pend = (self._pending_groups(conn, include_parked=True)
                        if self._any_pending(conn) else {})
                for spec, rid, moved in valid:
                    change, conflict = self._exit_one(conn, spec, rid, moved,
                                                      pend.get(spec.name, {}))
                    removed += [change] if change is not None else []
                    logged += [conflict] if conflict is not None else []
                top = max(v.hlc for _s, _r, v in valid)
                conn.execute("UPDATE _tablesync_state SET applying = 0, hlc = max(hlc, ?)",
                             (top,))
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(f"apply_exits: the local database refused the removals: "
                             f"{exc}") from None
        self._write_conflict_log(logged)
        return removed, rejected

    def _exit(self, row: Any) -> tuple[str, tuple[TableSpec, str, Version] | None]:
        """One ``tablesync_exits`` row checked: (problem, None) or ("", (spec, id, version))."""
        if not isinstance(row, Mapping):
            return f"not an object: {str(row)[:60]!r}", None
        table, rid = row.get("table_name"), row.get("record_id")
        hlc, origin = row.get("_ts_hlc"), row.get("_ts_origin")
        spec = self._specs.get(table) if isinstance(table, str) else None
        if spec is None:
            return f"table_name {str(table)[:60]!r} is not a synced table", None
        if not isinstance(rid, str) or not rid:
            return f"record_id {str(rid)[:60]!r} is not a non-empty string", None
        if type(hlc) is not int or hlc < 0 or not isinstance(origin, str):
            return f"{table} {rid!r}: malformed version ({hlc!r}, {origin!r})", None
        return "", (spec, rid, Version(hlc, origin))

    def _exit_one(self, conn: sqlite3.Connection, spec: TableSpec, rid: str, moved: Version,
                  pend: dict[str, list[_Entry]]
                  ) -> tuple[Change | None, dict[str, Any] | None]:
        meta = self._metas(conn, spec.name, [rid]).get(rid)
        if meta is not None and meta.version > moved:
            return None, None                   # it came back after the move
        entries = pend.get(rid)
        image = self._images(conn, spec, [rid]).get(rid)
        base = meta.version if meta is not None else ZERO
        gone = RowState(moved, True, base, image or {})
        conflict = None
        if entries:
            mine = self._local_state(spec, rid, entries, meta)
            assert mine is not None             # it has pending entries
            local = RowState(mine.version, mine.deleted, mine.base, mine.data or image or {})
            conflict = self._record_conflict(
                conn, spec.name, rid, gone, local,
                "record left this system's scope on the server; local changes not pushed")
            conn.execute("UPDATE sync_queue SET synced_at = ?, last_error = 'record left this "
                         "system''s scope on the server' WHERE synced_at IS NULL AND "
                         "table_name = ? AND record_id = ?", (utcnow(), spec.name, rid))
            log.warning("%s %s left this system's scope on the server; %d local change(s) "
                        "kept in the conflict log, not pushed", spec.name, rid, len(entries))
        conn.execute("DELETE FROM _tablesync_meta WHERE table_name = ? AND record_id = ?",
                     (spec.name, rid))
        # leaving the scope settles a parked record: its writes are in the conflict log
        conn.execute("DELETE FROM _tablesync_parked WHERE table_name = ? AND record_id = ?",
                     (spec.name, rid))
        deleted = conn.execute(f"DELETE FROM {_q(spec.name)} WHERE {_q(spec.primary_key)} = ?",
                               (rid,)).rowcount
        if not deleted and not entries:
            return None, None                   # nothing here (already removed)
        return Change(spec.name, rid, _DELETE, gone), conflict

    @staticmethod
    def _rid(spec: TableSpec, row: Mapping[str, Any]) -> str:
        rid = str(row.get(spec.primary_key, "") or "")
        if not rid:
            raise StoreError(f"apply_remote: a {spec.name} row has no {spec.primary_key}")
        return rid

    @staticmethod
    def _any_pending(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM sync_queue WHERE synced_at IS NULL "
                            "LIMIT 1").fetchone() is not None

    def _apply_one(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                   remote: RowState, pend: dict[str, list[_Entry]],
                   metas: dict[str, RowState], present: set[str]
                   ) -> tuple[Change | None, dict[str, Any] | None]:
        local = self._local_state(spec, rid, pend.get(rid), metas.get(rid))
        policy = spec.on_delete_conflict
        # Writes from one origin are causally ordered: our own write echoed back is
        # never a conflict with our later writes.
        foreign = remote.version.origin != self.system_id
        if local is not None and not lww.beats(remote, local, policy):
            conflict = None
            if foreign and local.version != remote.version and lww.is_concurrent(local, remote):
                conflict = self._record_conflict(conn, spec.name, rid,
                                                 self._with_data(conn, spec, rid, local),
                                                 remote, "remote write superseded by local")
            if rid in pend:
                # the server showed us this record (it is in our scope now): a write parked
                # as not visible/writable gets another try (re-parked if refused again)
                self._settle_parked(conn, spec.name, rid)
            return None, conflict
        conflict = None
        if local is not None and foreign and lww.is_concurrent(remote, local):
            conflict = self._record_conflict(conn, spec.name, rid, remote,
                                             self._with_data(conn, spec, rid, local),
                                             "local write superseded by remote")
        if local is not None and local.deleted and not remote.deleted:
            log.warning("edit-wins: %s %s restored by a concurrent remote edit", spec.name, rid)
        op = self._write_row(conn, spec, rid, remote, present)
        if pend.pop(rid, None):
            # closed, not deleted: deleting the newest entry would let SQLite hand its id
            # out again (no AUTOINCREMENT), below the stamping watermark
            conn.execute("UPDATE sync_queue SET synced_at = ?, last_error = 'superseded by a "
                         "remote version' WHERE synced_at IS NULL AND table_name = ? AND "
                         "record_id = ?", (utcnow(), spec.name, rid))
            self._settle_parked(conn, spec.name, rid)
        return Change(spec.name, rid, op, remote), conflict

    def _held_before(self, entries: list[_Entry], meta: RowState | None) -> Version:
        """The version the local copy held before the latest pending write: the previous
        pending write (acknowledged or not, it was this copy's state), else the meta."""
        if len(entries) >= 2:
            return Version(entries[-2].hlc, self.system_id)
        return meta.version if meta else ZERO

    def _local_state(self, spec: TableSpec, rid: str, entries: list[_Entry] | None,
                     meta: RowState | None) -> RowState | None:
        """The local version of a record (its row image is loaded only when logged)."""
        if entries:
            last = entries[-1]
            deleted = last.op == "DELETE"
            data = json.loads(last.data) if deleted and last.data else None
            return RowState(Version(max(e.hlc for e in entries), self.system_id), deleted,
                            self._held_before(entries, meta), data or {})
        if meta is None:
            return None
        return RowState(meta.version, meta.deleted, meta.base, {})

    def _with_data(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                   state: RowState) -> RowState:
        if state.data:
            return state
        data = self._images(conn, spec, [rid]).get(rid, {})
        return RowState(state.version, state.deleted, state.base, data)

    def _present(self, conn: sqlite3.Connection, spec: TableSpec,
                 rids: Sequence[str]) -> set[str]:
        """Which of ``rids`` exist in the local table (one query per 500)."""
        t, pk = _q(spec.name), _q(spec.primary_key)
        out: set[str] = set()
        for i in range(0, len(rids), CHUNK):
            part = rids[i:i + CHUNK]
            out.update(str(r) for (r,) in conn.execute(
                f"SELECT {pk} FROM {t} WHERE {pk} IN ({','.join('?' * len(part))})", part))
        return out

    def _write_row(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                   remote: RowState, present: set[str]) -> Op:
        t, pk = _q(spec.name), _q(spec.primary_key)
        exists = rid in present
        if remote.deleted:
            conn.execute(f"DELETE FROM {t} WHERE {pk} = ?", (rid,))
            present.discard(rid)
            return Op.DELETE
        cols = tuple(c for c in spec.column_names if c in remote.data)
        conn.execute(_upsert_sql(spec.name, spec.primary_key, cols),
                     [remote.data[c] for c in cols])
        present.add(rid)
        return Op.UPDATE if exists else Op.INSERT

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

    @staticmethod
    def _settle_parked(conn: sqlite3.Connection, table: str, rid: str) -> None:
        """Drop ``rid``'s parked mark (its retry count stays: a record refused for its
        content is parked again after one more try)."""
        conn.execute("DELETE FROM _tablesync_parked WHERE table_name = ? AND record_id = ?",
                     (table, rid))

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
                "datetime(min(julianday(q.created_at))) FROM sync_queue q WHERE q.synced_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM _tablesync_parked p WHERE p.table_name = q.table_name AND "
                "p.record_id = q.record_id)").fetchone()
            (parked,) = conn.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
            (conflicts,) = conn.execute("SELECT count(*) FROM _tablesync_conflicts").fetchone()
            (last,) = conn.execute("SELECT last_synced_at FROM _tablesync_state").fetchone()
        return QueueStats(depth, records, oldest, parked, conflicts, last)

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

    # -- reset ---------------------------------------------------------------------------

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
            stamp_pending(conn)
            entries = self._unsynced_entries(conn)
            if entries and not discard_pending:
                records = len({(e["table_name"], e["record_id"]) for e in entries})
                raise StoreError(
                    f"{self._db_path()}: {len(entries)} unsynced change(s) to {records} "
                    f"record(s); push them first (`tablesync sync now`) or pass "
                    f"--discard-pending (they are saved to a backup file first)")
            backup = self._write_backup(entries, backup_dir) if entries else None
            removed = self._drop_unacknowledged(conn, entries)
            conn.execute("UPDATE _tablesync_state SET hlc = max(hlc, coalesce((SELECT "
                         "max(hlc) FROM sync_queue), 0))")
            # keep the newest queue row (marked synced) so ids are never handed out again
            conn.execute("DELETE FROM sync_queue WHERE id < (SELECT max(id) FROM sync_queue)")
            conn.execute("UPDATE sync_queue SET synced_at = coalesce(synced_at, ?)",
                         (utcnow(),))
            for table in ("_tablesync_meta", "_tablesync_cursors", "_tablesync_parked"):
                conn.execute(f"DELETE FROM {_q(table)}")
        log.warning("reset: queue cleared (%d unsynced entries discarded), cursors reset",
                    len(entries))
        return ResetResult(len(entries), backup, removed)

    def _db_path(self) -> str:
        row = self._conn.execute("PRAGMA database_list").fetchone()
        return str(row[2]) if row and row[2] else "the local database"

    def _unsynced_entries(self, conn: sqlite3.Connection) -> list[dict[str, Any]]:
        cols = ("id", "operation", "table_name", "record_id", "record_data", "created_at",
                "retry_count", "hlc", "last_error")
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM sync_queue WHERE synced_at IS "
                            f"NULL ORDER BY id").fetchall()
        out = [dict(zip(cols, r)) for r in rows]
        by_table: dict[str, set[str]] = {}
        for e in out:
            by_table.setdefault(e["table_name"], set()).add(e["record_id"])
        images: dict[tuple[str, str], dict[str, Any]] = {}
        for table, rids in by_table.items():
            spec = self._specs.get(table)
            if spec is not None:
                for rid, data in self._images(conn, spec, sorted(rids)).items():
                    images[(table, rid)] = data
        for e in out:
            e["record_data"] = json.loads(e["record_data"]) if e["record_data"] else None
            e["current_row"] = images.get((e["table_name"], e["record_id"]))
        return out

    def _write_backup(self, entries: list[dict[str, Any]], backup_dir: Path | None) -> Path:
        db = Path(self._db_path())
        folder = backup_dir if backup_dir is not None else db.parent
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = folder / f"{db.name}.reset-{stamp}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):            # bounded: a free name for this second
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    break
                except FileExistsError:
                    path = folder / f"{db.name}.reset-{stamp}-{n}.jsonl"
            else:
                raise StoreError(f"{folder}: no free backup file name")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for e in entries:
                    fh.write(json.dumps(e, default=str, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StoreError(f"{path}: cannot write the reset backup: {exc}; nothing was "
                             f"cleared") from None
        return path

    def _drop_unacknowledged(self, conn: sqlite3.Connection,
                             entries: list[dict[str, Any]]) -> int:
        """Delete local rows of discarded records the server never acknowledged."""
        records = {(e["table_name"], e["record_id"]) for e in entries}
        removed = 0
        conn.execute("UPDATE _tablesync_state SET applying = 1")
        for table, rid in sorted(records):
            spec = self._specs.get(table)
            if spec is None:
                continue
            meta = self._metas(conn, table, [rid]).get(rid)
            if meta is None or meta.deleted:
                removed += conn.execute(f"DELETE FROM {_q(table)} WHERE "
                                        f"{_q(spec.primary_key)} = ?", (rid,)).rowcount
        conn.execute("UPDATE _tablesync_state SET applying = 0")
        return removed

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
