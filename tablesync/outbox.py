"""The push side of the local store: pending queue entries out, the server's outcomes in.

* :meth:`Outbox.read` groups the unparked pending entries of synced tables per record and
  coalesces each record into one :class:`Change` (its latest state; row images read in
  the same read transaction as the queue); :meth:`Outbox.order` sorts them FK-safe;
* :meth:`Outbox.ack` records the server's per-row outcomes: entries marked synced and
  versions recorded, superseded writes logged (their winners are returned for the store
  to apply), refused records retried or parked;
* :func:`local_state` is a record's local version from its pending entries and stored
  version, which the apply paths (:mod:`tablesync.inbox`) compare server rows with.

Everything runs inside the caller's transaction (:class:`tablesync.store.LocalStore` owns
the connection, the lock and the transactions).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tablesync import lww
from tablesync.conflicts import record_conflict
from tablesync.localdb import (CHUNK, META_UPSERT, echo_guard, images, insert_rows,
                               is_decode_error, lossless_text, metas, park, quote, utcnow)
from tablesync.model import (BACKFILL_HLC, SETTLED, ZERO, ApplyOutcome, Change, Op, Outcome,
                             RowState, TableSpec, Version)
from tablesync.rows import state_from_row
from tablesync.sql.wire import codec

# an apply error of SQLSTATE class 22 (data exception: a value Postgres cannot hold) fails
# the same way on every try: the record is parked at once with the server's reason
_DATA_ERROR = re.compile(r"(?:^|HTTP 4\d\d )22[0-9A-Z]{3}\b")
_DELETE, _INSERT, _UPDATE = Op.DELETE, Op.INSERT, Op.UPDATE   # enum lookups off hot loops
DEFAULT_MAX_RETRIES = 5
BACKFILL_REASON = ("row existed locally before sync and differs from the server's copy; "
                   "the server's copy was kept")
_SETTLED = SETTLED


@dataclass
class Entry:
    """One pending queue entry (``record_data`` only for deletes)."""

    id: int
    op: str
    hlc: int
    data: str | None


class Pending(list):  # type: ignore[type-arg]
    """:meth:`LocalStore.pending`'s changes (a list); ``more``: pending entries were left
    unread (the limit was reached)."""

    def __init__(self, changes: Iterable[Change] = (), more: bool = False) -> None:
        super().__init__(changes)
        self.more = more


def outcome_of(out: Mapping[str, Any]) -> ApplyOutcome:
    """An outcome given as a mapping (``{"outcome": ..., "row": ..., "message": ...}``)."""
    row = out.get("row")
    try:
        kind = Outcome(out.get("outcome"))
    except ValueError:                  # unknown: retried like an error
        kind = Outcome.ERROR
    return ApplyOutcome(str(out.get("id") or ""), kind,
                        dict(row) if isinstance(row, Mapping) else None, out.get("message"))


def mark_synced(conn: sqlite3.Connection, ids: list[int], now: str) -> None:
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


def still_pending(conn: sqlite3.Connection, changes: Sequence[Change]) -> set[int]:
    """Which of ``changes``' queue ids are still unsynced."""
    ids = [i for ch in changes for i in ch.queue_ids]
    return {i for (i,) in conn.execute(
        "SELECT id FROM sync_queue WHERE synced_at IS NULL AND id IN (SELECT value FROM "
        "json_each(?))", (json.dumps(ids),))}


def differs(spec: TableSpec, server_row: Mapping[str, Any], local: Mapping[str, Any]) -> bool:
    """Whether the server's row and a local row image (wire form) differ in a declared
    column (compared in their local form, so wire spellings of one value agree)."""
    wire = codec(spec)
    a, b = wire.to_local(dict(server_row)), wire.to_local(dict(local))
    return any(a.get(c) != b.get(c) for c in spec.column_names)


def held_before(entries: list[Entry], meta: RowState | None, system_id: str) -> Version:
    """The version the local copy held before the latest pending write: the previous
    pending write (acknowledged or not, it was this copy's state), else the meta."""
    if len(entries) >= 2:
        return Version(entries[-2].hlc, system_id)
    return meta.version if meta else ZERO


def local_state(entries: list[Entry] | None, meta: RowState | None,
                system_id: str) -> RowState | None:
    """The local version of a record (its row image is loaded only when logged)."""
    if entries:
        last = entries[-1]
        deleted = last.op == "DELETE"
        data = json.loads(last.data) if deleted and last.data else None
        return RowState(Version(max(e.hlc for e in entries), system_id), deleted,
                        held_before(entries, meta, system_id), data or {})
    if meta is None:
        return None
    return RowState(meta.version, meta.deleted, meta.base, {})


class Outbox:
    """The queue side of one store: reads pending changes and settles pushed ones.

    Remembers the lowest queue id that may still be pending (ids only grow), so reads
    skip the synced prefix of the queue."""

    def __init__(self, tables: Sequence[TableSpec], system_id: str) -> None:
        self._specs = {t.name: t for t in tables}
        self._rank = {t.name: i for i, t in enumerate(tables)}
        self.system_id = system_id
        self._low = 0  # no pending queue entry has a lower id (ids only grow)

    # -- pending changes ----------------------------------------------------------------

    def read(self, conn: sqlite3.Connection, limit: int | None,
             skip: Collection[tuple[str, str]], skip_tables: Collection[str] = ()
             ) -> tuple[list[Change], set[tuple[str, str]], bool]:
        """The pending changes for :meth:`LocalStore.pending` (unordered), the deletes of
        records the server never acknowledged among them, and whether the limit was
        reached; inside a read transaction."""
        groups = self.groups(conn, limit, skip, skip_tables=skip_tables)
        changes = []
        unknown: set[tuple[str, str]] = set()
        for table, recs in groups.items():
            changes += self._coalesce(conn, self._specs[table], recs, unknown)
        found = sum(map(len, groups.values()))
        return changes, unknown, limit is not None and found >= limit

    def order(self, changes: list[Change], unknown: Collection[tuple[str, str]],
              more: bool) -> Pending:
        """``changes`` in FK-safe push order (see :meth:`LocalStore.pending`)."""
        changes.sort(key=(lambda ch: self._key(ch, unknown)) if unknown else self._key)
        return Pending(changes, more)

    def groups(self, conn: sqlite3.Connection, limit: int | None = None,
               skip: Collection[tuple[str, str]] = (), *, include_parked: bool = False,
               skip_tables: Collection[str] = ()) -> dict[str, dict[str, list[Entry]]]:
        """Unparked pending entries of synced tables grouped by table and record, in queue
        order (records in ``skip`` left out like parked ones). ``include_parked``: parked
        records too (the apply paths compare remote rows with *every* pending local write:
        a parked write is still this copy's state, and must be logged, not overwritten).

        With ``limit``: entries are read from the oldest pending one until ``limit``
        records are found; the later entries of exactly those records are then added
        (one scan of the rest of the queue through an ephemeral key set)."""
        try:
            return self._groups(conn, limit, skip, include_parked, skip_tables)
        except sqlite3.OperationalError as exc:
            if not is_decode_error(exc):
                raise
            with lossless_text(conn):           # a delete's image holds non-UTF-8 text
                return self._groups(conn, limit, skip, include_parked, skip_tables)

    def _groups(self, conn: sqlite3.Connection, limit: int | None,
                skip: Collection[tuple[str, str]], include_parked: bool,
                skip_tables: Collection[str] = ()) -> dict[str, dict[str, list[Entry]]]:
        parked = (set() if include_parked else
                  set(conn.execute("SELECT table_name, record_id FROM _tablesync_parked")))
        parked.update(skip)
        specs = self._specs
        if skip_tables:
            specs = {k: v for k, v in specs.items() if k not in skip_tables}
        (upto,) = conn.execute("SELECT coalesce((SELECT stamped_id FROM _tablesync_stamp), "
                               "0)").fetchone()  # entries after it are not stamped yet
        cur = conn.execute(
            "SELECT id, table_name, record_id, operation, hlc, record_data FROM sync_queue "
            "WHERE id >= ? AND id <= ? AND synced_at IS NULL ORDER BY id", (self._low, upto))
        groups: dict[str, dict[str, list[Entry]]] = {}
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
            recs[rid].append(Entry(qid, op, hlc, data))
            last_id = qid
        cur.close()
        if first is not None:
            self._low = max(self._low, first)
        if limit is not None and found >= limit and last_id is not None:
            self._add_later_entries(conn, groups, last_id, upto)
        return groups

    def _add_later_entries(self, conn: sqlite3.Connection,
                           groups: dict[str, dict[str, list[Entry]]], after: int,
                           upto: int) -> None:
        # a row-value IN over json_each: about half the per-row cost of probing a
        # concatenated key (this scan reads the whole rest of the queue)
        keys = json.dumps([[t, r] for t, recs in groups.items() for r in recs])
        for qid, table, rid, op, hlc, data in conn.execute(
                "SELECT id, table_name, record_id, operation, hlc, record_data FROM sync_queue "
                "WHERE id > ? AND id <= ? AND synced_at IS NULL AND (table_name, record_id) "
                "IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM "
                "json_each(?)) ORDER BY id", (after, upto, keys)):
            groups[table][rid].append(Entry(qid, op, hlc, data))

    def _coalesce(self, conn: sqlite3.Connection, spec: TableSpec,
                  recs: dict[str, list[Entry]],
                  unknown: set[tuple[str, str]] | None = None) -> list[Change]:
        """One change per record (its latest state); deletes of records with no stored
        version (never acknowledged by the server) are added to ``unknown``."""
        stored = metas(conn, spec.name, list(recs))
        rows = images(conn, spec, [r for r, es in recs.items() if es[-1].op != "DELETE"])
        wire = codec(spec)                  # pushed in wire form (docs/types.md)
        out = []
        for rid, entries in recs.items():
            meta = stored.get(rid)
            last = entries[-1]
            if last.op == "DELETE":
                data = json.loads(last.data) if last.data else {}
                deleted = True
            elif rid in rows:
                data, deleted = wire.to_wire(rows[rid]), False
            else:
                continue  # the row vanished without a captured delete; nothing to push
            ids: tuple[int, ...]
            if len(entries) == 1:               # the common case, without generators
                hlc, ids = last.hlc, (last.id,)
            else:
                hlc, ids = max(e.hlc for e in entries), tuple([e.id for e in entries])
            state = RowState(Version(hlc, self.system_id), deleted,
                             held_before(entries, meta, self.system_id), data)
            op = _DELETE if deleted else (_INSERT if meta is None or meta.deleted else _UPDATE)
            if deleted and meta is None and unknown is not None:
                unknown.add((spec.name, rid))
            out.append(Change(spec.name, rid, op, state, ids))
        return out

    def _key(self, ch: Change, unknown: Collection[tuple[str, str]] = ()
             ) -> tuple[int, int, int, int]:
        rank = self._rank[ch.table]
        first = ch.queue_ids[0] if ch.queue_ids else 0
        if ch.op is _DELETE:
            if (ch.table, ch.record_id) in unknown:
                return (1, rank, 2, first)      # a tombstone the server may not hold
            return (0, -rank, 0, first)
        return (1, rank, 0 if ch.op is _UPDATE else 1, first)

    # -- acknowledgement -----------------------------------------------------------------

    def ack(self, conn: sqlite3.Connection, changes: Sequence[Change],
            outcomes: Sequence[ApplyOutcome | Mapping[str, Any]], max_retries: int
            ) -> tuple[dict[str, list[Mapping[str, Any]]], list[dict[str, Any]]]:
        """Record the server's per-row outcomes (see :meth:`LocalStore.ack`) inside a write
        transaction; the winning server rows of superseded changes per table (for the
        store to apply) and the new conflict log entries (for the file)."""
        winners: dict[str, list[Mapping[str, Any]]] = {}
        conflicts: list[tuple[str, str, RowState, RowState, str]] = []
        now = utcnow()
        acked = False
        synced: list[int] = []
        versions: list[Change] = []
        outs = [g if isinstance(g, ApplyOutcome) else outcome_of(g) for g in outcomes]
        canonical: list[tuple[Change, Mapping[str, Any]]] = []
        open_ids: set[int] = set()
        if any(o.outcome not in _SETTLED for o in outs):
            open_ids = still_pending(conn, changes)
        for ch, out in zip(changes, outs):
            kind = out.outcome
            if kind not in _SETTLED and not open_ids.intersection(ch.queue_ids):
                # settled meanwhile (the record left the scope, or a remote version
                # superseded it, while this push was in flight): nothing to park
                continue
            if kind == Outcome.APPLIED or kind == Outcome.DUPLICATE:
                synced += ch.queue_ids
                versions.append(ch)
                acked = True
                if out.row and not ch.state.deleted:
                    canonical.append((ch, out.row))
            elif kind == Outcome.SUPERSEDED:
                synced += ch.queue_ids
                row = out.row
                if isinstance(row, Mapping):
                    winners.setdefault(ch.table, []).append(row)
                    spec = self._specs[ch.table]
                    won = state_from_row(row, spec)
                    if ch.state.version.hlc == BACKFILL_HLC:
                        # a pre-existing row the server already held: the server's copy
                        # is kept (applied locally); a difference is logged
                        if won.deleted or differs(spec, row, ch.state.data):
                            conflicts.append((ch.table, ch.record_id, won, ch.state,
                                              BACKFILL_REASON))
                    elif lww.overwrote_pending(won, ch.state):
                        conflicts.append((ch.table, ch.record_id, won, ch.state,
                                          "pushed write superseded"))
                acked = True
            elif kind == Outcome.FORBIDDEN:
                park(conn, ch.table, ch.record_id, str(out.message or Outcome(kind).value))
            elif _DATA_ERROR.search(str(out.message or "")):
                park(conn, ch.table, ch.record_id, str(out.message))
            else:
                self._retry(conn, ch, str(out.message or Outcome(kind).value), max_retries)
        if synced:
            mark_synced(conn, synced, now)
        if canonical:
            self._adopt(conn, canonical)
        self._set_metas_if_newer(conn, versions)
        if acked:
            conn.execute("UPDATE _tablesync_state SET last_synced_at = ?", (now,))
        logged = [record_conflict(conn, *c) for c in conflicts]
        return winners, [x for x in logged if x]

    def _adopt(self, conn: sqlite3.Connection,
               canonical: Sequence[tuple[Change, Mapping[str, Any]]]) -> None:
        """Write the server's stored values of acknowledged records (where Postgres
        normalised what was sent: docs/types.md) into the local rows, under the echo guard
        (no queue entry, no new version). A record with a newer pending write keeps it: that
        write is pushed, and canonicalised, in turn."""
        with echo_guard(conn):
            for ch, row in canonical:
                if conn.execute("SELECT 1 FROM sync_queue WHERE synced_at IS NULL AND "
                                "table_name = ? AND record_id = ? LIMIT 1",
                                (ch.table, ch.record_id)).fetchone():
                    continue
                spec = self._specs[ch.table]
                local = codec(spec).to_local(row)
                cols = [c for c in spec.column_names if c in local and c != spec.primary_key]
                if not cols:
                    continue
                sets = ", ".join(f"{quote(c)} = ?" for c in cols)
                conn.execute(f"UPDATE {quote(spec.name)} SET {sets} WHERE "
                             f"{quote(spec.primary_key)} = ?",
                             [*(local[c] for c in cols), ch.record_id])

    def park_changes(self, conn: sqlite3.Connection, changes: Sequence[Change],
                     reason: str) -> int:
        """Park the records of ``changes`` whose entries are still pending; how many."""
        open_ids = still_pending(conn, changes)
        n = 0
        for ch in changes:
            if open_ids.intersection(ch.queue_ids):
                park(conn, ch.table, ch.record_id, reason)
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
            current = metas(conn, table, list(recs))
            for rid, ch in recs.items():
                cur = current.get(rid)
                if cur is None or lww.beats(ch.state, cur, policy):
                    st = ch.state
                    rows.append((table, rid, st.version.hlc, st.version.origin,
                                 int(st.deleted), st.base.hlc, st.base.origin))
        insert_rows(conn, META_UPSERT, rows)

    @staticmethod
    def _retry(conn: sqlite3.Connection, ch: Change, message: str, max_retries: int) -> None:
        ids = ch.queue_ids[:CHUNK]
        marks = ",".join("?" * len(ids))
        conn.execute(f"UPDATE sync_queue SET retry_count = retry_count + 1, last_error = ? "
                     f"WHERE id IN ({marks})", (message, *ids))
        (tries,) = conn.execute(f"SELECT max(retry_count) FROM sync_queue WHERE id IN "
                                f"({marks})", ids).fetchone()
        if (tries or 0) >= max_retries:
            park(conn, ch.table, ch.record_id, f"after {tries} tries: {message}")
