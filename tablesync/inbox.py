"""The pull side of the local store: server rows and scope exits applied locally.

* :meth:`Inbox.apply_rows` applies a page of server rows under the echo guard with the
  LWW rule (:func:`lww.beats`), logging every superseded concurrent write; records with
  nothing local to compare with are written in bulk (:class:`_Fresh`);
* :meth:`Inbox.apply_exits` removes the local copies of records that left this system's
  scope on the server (rows of ``tablesync_exits``), keeping pending local changes in
  the conflict log.

Both stamp the queue first and raise the observed clock last, inside the caller's write
transaction (:class:`tablesync.store.LocalStore` owns the connection, the lock, the
transactions and the conflict log file).
"""

from __future__ import annotations

import functools
import logging
import operator
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tablesync import lww
from tablesync.applied import Applied
from tablesync.conflicts import record_conflict
from tablesync.errors import StoreError
from tablesync.localdb import (CHUNK, META_UPSERT, echo_guard, images, insert_rows, metas,
                               quote, settle_parked, utcnow)
from tablesync.model import EXITS_TABLE, ZERO, Change, Op, RowState, TableSpec, Version
from tablesync.outbox import Entry, Outbox, local_state
from tablesync.rows import state_from_row
from tablesync.stamp import stamp_pending

log = logging.getLogger("tablesync.store")   # the store's logger (one component to users)

Exit = tuple[TableSpec, str, Version]        # a checked exit: table, record id, version


@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, pk: str, cols: tuple[str, ...]) -> str:
    """INSERT ... ON CONFLICT (pk) DO UPDATE of ``cols`` (cached per column set)."""
    names = ", ".join(quote(c) for c in cols)
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in cols if c != pk)
    sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({','.join('?' * len(cols))})"
    return sql + (f" ON CONFLICT ({quote(pk)}) DO UPDATE SET {sets}" if sets
                  else " ON CONFLICT DO NOTHING")


def _seq(row: Mapping[str, Any]) -> int:
    seq = row.get("_ts_seq")
    return seq if type(seq) is int else 0


def rid_of(spec: TableSpec, row: Mapping[str, Any]) -> str:
    """A server row's record id (its primary key as text); StoreError if it has none."""
    rid = str(row.get(spec.primary_key, "") or "")
    if not rid:
        raise StoreError(f"apply_remote: a {spec.name} row has no {spec.primary_key}")
    return rid


def _any_pending(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sync_queue WHERE synced_at IS NULL "
                        "LIMIT 1").fetchone() is not None


def _observe(conn: sqlite3.Connection, hlc: int) -> None:
    """Raise the observed clock to ``hlc`` (after stamping: :mod:`tablesync.stamp`)."""
    conn.execute("UPDATE _tablesync_state SET hlc = max(hlc, ?)", (hlc,))


def _present(conn: sqlite3.Connection, spec: TableSpec, rids: Sequence[str]) -> set[str]:
    """Which of ``rids`` exist in the local table (one query per 500)."""
    t, pk = quote(spec.name), quote(spec.primary_key)
    out: set[str] = set()
    for i in range(0, len(rids), CHUNK):
        part = rids[i:i + CHUNK]
        out.update(str(r) for (r,) in conn.execute(
            f"SELECT {pk} FROM {t} WHERE {pk} IN ({','.join('?' * len(part))})", part))
    return out


def _with_data(conn: sqlite3.Connection, spec: TableSpec, rid: str,
               state: RowState) -> RowState:
    if state.data:
        return state
    data = images(conn, spec, [rid]).get(rid, {})
    return RowState(state.version, state.deleted, state.base, data)


def _write_row(conn: sqlite3.Connection, spec: TableSpec, rid: str, remote: RowState,
               present: set[str]) -> Op:
    t, pk = quote(spec.name), quote(spec.primary_key)
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
        insert_rows(conn, self.sql, list(map(self.values, rows)))
        insert_rows(conn, META_UPSERT, [
            (name, rid, hlc, str(r.get("_ts_origin") or ""), 0,
             int(r.get("_ts_base_hlc") or 0), str(r.get("_ts_base_origin") or ""))
            for rid, r, hlc in zip(rids, rows, hlcs)])
        applied.add_rows(rids, [Op.UPDATE if rid in present else Op.INSERT for rid in rids],
                         rows)
        present.update(rids)
        self.rids, self.rows = [], []
        return max(hlcs)


class Inbox:
    """Applies what the server sends to one store's SQLite file."""

    def __init__(self, tables: Sequence[TableSpec], system_id: str, outbox: Outbox) -> None:
        self._specs = {t.name: t for t in tables}
        self.system_id = system_id
        self._outbox = outbox          # the pending entries the apply paths compare with

    # -- server rows ---------------------------------------------------------------------

    def apply_rows(self, conn: sqlite3.Connection, spec: TableSpec,
                   rows: list[Mapping[str, Any]], rids: list[str]
                   ) -> tuple[Applied, list[dict[str, Any]]]:
        """Apply ``rows`` (record ids ``rids``) inside a write transaction (see
        :meth:`LocalStore.apply_remote`); the changes applied and the new conflict log
        entries."""
        table = spec.name
        applied = Applied(spec)
        logged: list[dict[str, Any]] = []
        stamp_pending(conn)  # before the observed clock moves (tablesync.stamp)
        with echo_guard(conn):
            pend = (self._outbox.groups(conn, include_parked=True).get(table, {})
                    if _any_pending(conn) else {})
            unique = list(dict.fromkeys(rids))
            stored = metas(conn, table, unique)
            present = _present(conn, spec, unique)
            fresh = _Fresh(spec)
            seen: dict[str, Mapping[str, Any]] = {}   # rid -> last row written by bulk
            written: dict[str, RowState] = {}         # versions written by _apply_one
            top = 0
            keys = fresh.keys
            for rid, row in zip(rids, rows):
                if (rid not in stored and rid not in pend and rid not in seen
                        and not row.get("_ts_deleted") and row.keys() >= keys):
                    fresh.rids.append(rid)
                    fresh.rows.append(row)
                    seen[rid] = row
                    continue
                top = max(top, fresh.flush(conn, applied, present))
                if rid in seen and rid not in stored:
                    stored[rid] = state_from_row(seen[rid], spec)
                remote = state_from_row(row, spec)
                top = max(top, remote.version.hlc)
                change, conflict = self._apply_one(conn, spec, rid, remote, pend, stored,
                                                    present)
                if change is not None:
                    applied.append(change)
                    stored[rid] = written[rid] = remote
                if conflict is not None:
                    logged.append(conflict)
            top = max(top, fresh.flush(conn, applied, present))
            conn.executemany(META_UPSERT, [
                (table, rid, st.version.hlc, st.version.origin, int(st.deleted),
                 st.base.hlc, st.base.origin) for rid, st in written.items()])
            _observe(conn, top)
        return applied, logged

    def _apply_one(self, conn: sqlite3.Connection, spec: TableSpec, rid: str,
                   remote: RowState, pend: dict[str, list[Entry]],
                   stored: dict[str, RowState], present: set[str]
                   ) -> tuple[Change | None, dict[str, Any] | None]:
        local = local_state(pend.get(rid), stored.get(rid), self.system_id)
        policy = spec.on_delete_conflict
        # Writes from one origin are causally ordered: our own write echoed back is
        # never a conflict with our later writes.
        foreign = remote.version.origin != self.system_id
        if local is not None and not lww.beats(remote, local, policy):
            conflict = None
            if foreign and local.version != remote.version and lww.is_concurrent(local, remote):
                conflict = record_conflict(conn, spec.name, rid,
                                           _with_data(conn, spec, rid, local),
                                           remote, "remote write superseded by local")
            if rid in pend:
                # the server showed us this record (it is in our scope now): a write parked
                # as not visible/writable gets another try (re-parked if refused again)
                settle_parked(conn, spec.name, rid)
            return None, conflict
        conflict = None
        unseen = (lww.overwrote_pending(remote, local) if rid in pend and local is not None
                  else local is not None and lww.is_concurrent(remote, local))
        if local is not None and foreign and unseen:
            conflict = record_conflict(conn, spec.name, rid, remote,
                                       _with_data(conn, spec, rid, local),
                                       "local write superseded by remote")
        if local is not None and local.deleted and not remote.deleted:
            log.warning("edit-wins: %s %s restored by a concurrent remote edit", spec.name, rid)
        op = _write_row(conn, spec, rid, remote, present)
        if pend.pop(rid, None):
            # closed, not deleted: deleting the newest entry would let SQLite hand its id
            # out again (no AUTOINCREMENT), below the stamping watermark
            conn.execute("UPDATE sync_queue SET synced_at = ?, last_error = 'superseded by a "
                         "remote version' WHERE synced_at IS NULL AND table_name = ? AND "
                         "record_id = ?", (utcnow(), spec.name, rid))
            settle_parked(conn, spec.name, rid)
        return Change(spec.name, rid, op, remote), conflict

    # -- records leaving the scope -------------------------------------------------------

    def check_exits(self, exits: Iterable[Any],
                    returned: Mapping[tuple[str, str], int] | None
                    ) -> tuple[list[Exit], list[str]]:
        """The exits to apply (those older than a return in ``returned`` left out) and one
        message per malformed row (see :meth:`LocalStore.apply_exits`)."""
        valid: list[Exit] = []
        rejected: list[str] = []
        for i, row in enumerate(exits):
            problem, found = self._exit(row)
            if found is None:
                rejected.append(f"{EXITS_TABLE} row {i}: {problem}")
            elif returned and returned.get((found[0].name, found[1]), -1) > _seq(row):
                continue                        # it came back later: seen in this pull
            else:
                valid.append(found)
        return valid, rejected

    def _exit(self, row: Any) -> tuple[str, Exit | None]:
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

    def apply_exits(self, conn: sqlite3.Connection, valid: Sequence[Exit]
                    ) -> tuple[list[Change], list[dict[str, Any]]]:
        """Remove the local copies of ``valid`` (checked, non-empty) exits inside a write
        transaction; the removals and the new conflict log entries."""
        removed: list[Change] = []
        logged: list[dict[str, Any]] = []
        stamp_pending(conn)  # before the observed clock moves (tablesync.stamp)
        with echo_guard(conn):
            pend = (self._outbox.groups(conn, include_parked=True)
                    if _any_pending(conn) else {})
            for spec, rid, moved in valid:
                change, conflict = self._exit_one(conn, spec, rid, moved,
                                                  pend.get(spec.name, {}))
                removed += [change] if change is not None else []
                logged += [conflict] if conflict is not None else []
            _observe(conn, max(v.hlc for _s, _r, v in valid))
        return removed, logged

    def _exit_one(self, conn: sqlite3.Connection, spec: TableSpec, rid: str, moved: Version,
                  pend: dict[str, list[Entry]]
                  ) -> tuple[Change | None, dict[str, Any] | None]:
        meta = metas(conn, spec.name, [rid]).get(rid)
        if meta is not None and meta.version > moved:
            return None, None                   # it came back after the move
        entries = pend.get(rid)
        image = images(conn, spec, [rid]).get(rid)
        base = meta.version if meta is not None else ZERO
        gone = RowState(moved, True, base, image or {})
        conflict = None
        if entries:
            mine = local_state(entries, meta, self.system_id)
            assert mine is not None             # it has pending entries
            local = RowState(mine.version, mine.deleted, mine.base, mine.data or image or {})
            conflict = record_conflict(
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
        settle_parked(conn, spec.name, rid)
        deleted = conn.execute(f"DELETE FROM {quote(spec.name)} WHERE "
                               f"{quote(spec.primary_key)} = ?", (rid,)).rowcount
        if not deleted and not entries:
            return None, None                   # nothing here (already removed)
        return Change(spec.name, rid, Op.DELETE, gone), conflict
