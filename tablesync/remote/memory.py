"""An in-memory model of the server side (Supabase/Postgres), for tests and offline demos.

It implements the same contract as the generated Postgres objects (docs/correctness.md):

- ``apply(table, rows)`` is ``tablesync_apply_<table>``: one outcome per row, in order
  (``applied`` / ``duplicate`` / ``superseded`` with the server's row / ``forbidden`` /
  ``error``); incoming wins iff ``lww.sort_key(incoming) > sort_key(stored)``; an equal
  version is a duplicate; per-row problems never fail the batch.
- every write takes the next value of one change sequence (``_ts_seq``) and the writing
  transaction's id (``_ts_xid``) *when it is written*; other readers see it only once its
  transaction commits, so a long transaction can commit rows "in the past".
- ``watermark()`` is ``pg_snapshot_xmin(pg_current_snapshot())``: the oldest transaction
  still running, else the next id. Pulling ``_ts_xid >= cursor`` in ``_ts_seq`` pages and
  then setting ``cursor := watermark taken first`` never skips a late commit.
- ``system_id`` plays the JWT claim under RLS (``None`` is the service role): rows whose
  scope column differs are invisible to pulls and ``forbidden`` to writes.
- ``write()`` is a dashboard/REST write; like the trigger it stamps a new ``server``
  version when the write did not bring one.

Rows on the wire are plain dicts: the user's columns plus the ``_ts_*`` columns.
Single-threaded and deterministic: a row written by an open transaction is locked, and another transaction
writing it gets a per-row ``error`` (Postgres would wait; the caller retries either way).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tablesync import clock, lww
from tablesync.clock import SystemClock, WallClock
from tablesync.errors import AuthError, TablesyncError
from tablesync.model import (EXITS_TABLE, ZERO, Conflict, DeletePolicy, Outcome, RowState,
                             TableSpec, Version)

VERSION_COLUMNS = ("_ts_hlc", "_ts_origin", "_ts_deleted", "_ts_base_hlc", "_ts_base_origin")
SERVER_ORIGIN = "server"
DEFAULT_PAGE_LIMIT = 1000
FIRST_XID = 700  # like a fresh Postgres cluster: ids start well above 0

Row = dict[str, Any]
Listener = Callable[[str, Row], None]


@dataclass(frozen=True)
class ApplyResult:
    """One element of the apply function's JSON array."""

    id: str
    outcome: Outcome
    row: Row | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome.value, "row": self.row,
                "message": self.message}


@dataclass(frozen=True)
class ServerTable:
    """What the server needs to know about a synced table."""

    name: str
    primary_key: str
    scope: str
    policy: DeletePolicy = DeletePolicy.EDIT_WINS

    @classmethod
    def from_spec(cls, spec: TableSpec) -> ServerTable:
        return cls(spec.name, spec.primary_key, spec.scope, spec.on_delete_conflict)


@dataclass
class Transaction:
    """A server transaction; gets an id at its first write, like Postgres."""

    xid: int | None = None
    writes: dict[tuple[str, str], Row] = field(default_factory=dict)
    log: list[tuple[str, Row]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    exits: list[Row] = field(default_factory=list)
    open: bool = True


class MemoryServerError(TablesyncError):
    """The model was used against its contract (unknown table, closed transaction)."""


def row_state(row: Mapping[str, Any]) -> RowState:
    """The version/tombstone/base of a wire row; ``data`` holds its user columns."""
    return RowState(
        Version(int(row.get("_ts_hlc", 0)), str(row.get("_ts_origin", ""))),
        bool(row.get("_ts_deleted", False)),
        Version(int(row.get("_ts_base_hlc", 0)), str(row.get("_ts_base_origin", ""))),
        {k: v for k, v in row.items() if not k.startswith("_ts_")},
    )


def wire_row(state: RowState) -> Row:
    """A push body row for ``state``: its user columns plus the version columns."""
    row = dict(state.data)
    row.update(_ts_hlc=state.version.hlc, _ts_origin=state.version.origin,
               _ts_deleted=state.deleted, _ts_base_hlc=state.base.hlc,
               _ts_base_origin=state.base.origin)
    return row


class MemoryServer:
    """The server model: committed rows, open transactions, sequence, listeners."""

    def __init__(self, tables: Iterable[ServerTable | TableSpec], *,
                 wall: WallClock | None = None, first_xid: int = FIRST_XID) -> None:
        self.tables = {t.name: t if isinstance(t, ServerTable) else ServerTable.from_spec(t)
                       for t in tables}
        self._rows: dict[str, dict[str, Row]] = {name: {} for name in self.tables}
        self._wall = wall or SystemClock()
        self._xids = itertools.count(first_xid)
        self._next_xid = first_xid
        self._seq = 0
        self._open: list[Transaction] = []
        self._locks: dict[tuple[str, str], Transaction] = {}
        self._listeners: list[Listener] = []
        self.conflicts: list[Conflict] = []
        self._exits: list[Row] = []       # tablesync_exits: records that left a scope

    # --- transactions -----------------------------------------------------------------

    def begin(self) -> Transaction:
        """Open a transaction (it takes an id at its first write)."""
        txn = Transaction()
        self._open.append(txn)
        return txn

    def commit(self, txn: Transaction) -> None:
        """Make the transaction's writes visible, then notify listeners in write order."""
        self._close(txn)
        for (table, rid), row in txn.writes.items():
            self._rows[table][rid] = row
        self.conflicts.extend(txn.conflicts)
        self._exits.extend(txn.exits)
        for table, row in txn.log:
            for listener in list(self._listeners):
                listener(table, dict(row))

    def rollback(self, txn: Transaction) -> None:
        """Discard the transaction's writes (their sequence values stay used)."""
        self._close(txn)

    def watermark(self) -> int:
        """``pg_snapshot_xmin``: the oldest running transaction id, else the next id."""
        running = [t.xid for t in self._open if t.xid is not None]
        return min(running, default=self._next_xid)

    @property
    def open_transactions(self) -> tuple[Transaction, ...]:
        return tuple(self._open)

    # --- the apply function and dashboard writes ------------------------------------------

    def apply(self, table: str, rows: Iterable[Mapping[str, Any]], *,
              system_id: str | None = None, txn: Transaction | None = None) -> list[ApplyResult]:
        """``tablesync_apply_<table>``: LWW-apply each row; one result per row, in order."""
        spec = self._table(table)
        with self._transaction(txn) as t:
            return [self._apply_one(spec, row, system_id, t) for row in rows]

    def write(self, table: str, values: Mapping[str, Any], *, deleted: bool = False,
              system_id: str | None = None, txn: Transaction | None = None) -> ApplyResult:
        """A dashboard/REST insert, PATCH or soft delete; the trigger stamps the version.

        Returns the stored row (``row``) so callers can see the stamp."""
        spec = self._table(table)
        with self._transaction(txn) as t:
            rid, problem = self._check(spec, values, system_id, t)
            if problem is not None:
                return problem
            old = self._visible(table, rid, t)
            base = row_state(old).version if old is not None else ZERO
            stamp = max(clock.pack(self._wall.now_ms()), base.hlc + 1)
            new = RowState(Version(stamp, SERVER_ORIGIN), deleted, base, dict(values))
            self._store(t, table, rid, old, new)
            return ApplyResult(rid, Outcome.APPLIED, row=dict(t.writes[(table, rid)]))

    # --- reads -------------------------------------------------------------------------

    def pull(self, table: str, *, cursor: int, after_seq: int = 0,
             limit: int = DEFAULT_PAGE_LIMIT, system_id: str | None = None) -> list[Row]:
        """One catch-up page: committed rows with ``_ts_xid >= cursor`` and ``_ts_seq >
        after_seq``, in ``_ts_seq`` order, at most ``limit``, filtered by scope."""
        spec = self._table(table)
        hits = [r for r in self._rows[table].values()
                if r["_ts_xid"] >= cursor and r["_ts_seq"] > after_seq
                and (system_id is None or r.get(spec.scope) == system_id)]
        hits.sort(key=lambda r: r["_ts_seq"])
        return [dict(r) for r in hits[:limit]]

    def pull_exits(self, *, cursor: int, after_seq: int = 0, limit: int = DEFAULT_PAGE_LIMIT,
                   system_id: str | None = None) -> list[Row]:
        """A catch-up page of ``tablesync_exits`` (records that left a scope), like
        :meth:`pull`; ``system_id`` filters on the scope they left."""
        hits = [r for r in self._exits if r["_ts_xid"] >= cursor and r["_ts_seq"] > after_seq
                and (system_id is None or r["scope"] == system_id)]
        hits.sort(key=lambda r: r["_ts_seq"])
        return [dict(r) for r in hits[:limit]]

    def row(self, table: str, rid: str) -> Row | None:
        """The committed row (tombstones included), as the service role sees it."""
        found = self._rows[self._table(table).name].get(rid)
        return dict(found) if found is not None else None

    def rows(self, table: str) -> dict[str, Row]:
        """Every committed row of ``table`` by primary key text."""
        return {rid: dict(r) for rid, r in self._rows[self._table(table).name].items()}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(table, row)`` for every committed write; returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- internals ---------------------------------------------------------------------

    def _apply_one(self, spec: ServerTable, row: Mapping[str, Any], system_id: str | None,
                   t: Transaction) -> ApplyResult:
        rid, problem = self._check(spec, row, system_id, t)
        if problem is not None:
            return problem
        try:
            incoming = row_state(row)
        except (TypeError, ValueError) as exc:
            return ApplyResult(rid, Outcome.ERROR, message=f"{spec.name} {rid}: bad version: {exc}")
        old = self._visible(spec.name, rid, t)
        if old is None:
            self._store(t, spec.name, rid, None, incoming)
            return ApplyResult(rid, Outcome.APPLIED)
        stored = row_state(old)
        if stored.version == incoming.version:
            return ApplyResult(rid, Outcome.DUPLICATE)
        if not lww.beats(incoming, stored, spec.policy):
            return ApplyResult(rid, Outcome.SUPERSEDED, row=dict(old))
        if lww.is_concurrent(incoming, stored):
            t.conflicts.append(self._conflict(spec.name, rid, incoming, stored))
        self._store(t, spec.name, rid, old, incoming)
        return ApplyResult(rid, Outcome.APPLIED)

    def _check(self, spec: ServerTable, row: Mapping[str, Any], system_id: str | None,
               t: Transaction) -> tuple[str, ApplyResult | None]:
        """Primary key present, scope allowed (RLS), row not locked by another txn."""
        if row.get(spec.primary_key) is None:
            return "", ApplyResult("", Outcome.ERROR,
                                   message=f"{spec.name}: row without primary key {spec.primary_key!r}")
        rid = str(row[spec.primary_key])
        old = self._visible(spec.name, rid, t)
        scopes = [row.get(spec.scope)] + ([old.get(spec.scope)] if old is not None else [])
        if system_id is not None and any(s != system_id for s in scopes):
            return rid, ApplyResult(rid, Outcome.FORBIDDEN, message=(
                f"{spec.name} {rid}: new row violates row-level security policy "
                f"({spec.scope} must be {system_id!r})"))
        holder = self._locks.get((spec.name, rid))
        if holder is not None and holder is not t:
            return rid, ApplyResult(rid, Outcome.ERROR, message=(
                f"{spec.name} {rid}: row locked by a concurrent transaction; retry"))
        return rid, None

    def _store(self, t: Transaction, table: str, rid: str, old: Row | None,
               new: RowState) -> None:
        """Write a row image inside ``t``: next sequence value, the transaction's id."""
        if t.xid is None:
            t.xid = next(self._xids)
            self._next_xid = t.xid + 1
        self._seq += 1
        row: Row = dict(old or {})
        row = {k: v for k, v in row.items() if not k.startswith("_ts_")}
        row.update(wire_row(new))  # a tombstone without columns keeps the last image
        row.update(_ts_seq=self._seq, _ts_xid=t.xid)
        t.writes[(table, rid)] = row
        t.log.append((table, row))
        self._locks[(table, rid)] = t
        scope = self.tables[table].scope
        if old is not None and old.get(scope) is not None and row.get(scope) != old.get(scope):
            self._seq += 1                  # the exit trigger's row, same transaction
            t.exits.append({"id": self._seq, "table_name": table, "record_id": rid,
                            "scope": old[scope], "_ts_hlc": row["_ts_hlc"],
                            "_ts_origin": row["_ts_origin"], "_ts_seq": self._seq,
                            "_ts_xid": t.xid})

    def _visible(self, table: str, rid: str, t: Transaction) -> Row | None:
        mine = t.writes.get((table, rid))
        return mine if mine is not None else self._rows[table].get(rid)

    def _close(self, txn: Transaction) -> None:
        if not txn.open:
            raise MemoryServerError("transaction already ended")
        txn.open = False
        self._open.remove(txn)
        for key in txn.writes:
            self._locks.pop(key, None)

    @contextmanager
    def _transaction(self, txn: Transaction | None) -> Iterator[Transaction]:
        """Run a block in ``txn``, or in an autocommit transaction of its own."""
        if txn is not None:
            if not txn.open:
                raise MemoryServerError("transaction already ended")
            yield txn
            return
        own = self.begin()
        try:
            yield own
        except BaseException:
            self.rollback(own)
            raise
        self.commit(own)

    def _table(self, name: str) -> ServerTable:
        try:
            return self.tables[name]
        except KeyError as exc:
            raise MemoryServerError(f"unknown table {name!r} (known: {sorted(self.tables)})") from exc

    def _conflict(self, table: str, rid: str, winner: RowState, loser: RowState) -> Conflict:
        when = clock.to_iso(clock.pack(self._wall.now_ms()))
        return Conflict(table, rid, winner, loser, when, "server apply overwrote a concurrent write")


class MemoryRemote:
    """The engine's ``Remote`` (:mod:`tablesync.remote.base`) over a :class:`MemoryServer`.

    For offline demos and engine tests: no HTTP and no accounts; ``system_id`` plays the
    JWT's ``app_metadata.system_id`` (RLS), ``None`` the service role.
    """

    def __init__(self, server: MemoryServer, *, system_id: str | None = None) -> None:
        self.server = server
        self.system_id = system_id

    def sign_in(self, email: str, password: object) -> Any:
        raise AuthError("the in-memory remote has no accounts; leave [supabase] email unset")

    def refresh(self, refresh_token: object) -> Any:
        raise AuthError("the in-memory remote has no sessions to refresh")

    def apply(self, table: str, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        """``rpc/tablesync_apply_<table>``: one ApplyOutcome per row, in order."""
        from tablesync.remote.base import ApplyOutcome  # the engine's type (same layer)

        return [ApplyOutcome(r.id, r.outcome, r.row, r.message)
                for r in self.server.apply(table, rows, system_id=self.system_id)]

    def watermark(self) -> int:
        return self.server.watermark()

    def pull_page(self, table: str, scope: str, system_id: str, cursor: int,
                  after_seq: int, limit: int = DEFAULT_PAGE_LIMIT) -> Any:
        """One catch-up page, filtered like ``<scope>=eq.<system_id>`` (and by RLS)."""
        from tablesync.remote.base import Page

        if table == EXITS_TABLE:
            if self.system_id is not None and system_id != self.system_id:
                return Page(rows=[], size=0, last_seq=None)
            rows = self.server.pull_exits(cursor=cursor, after_seq=after_seq, limit=limit,
                                          system_id=system_id)
            return Page(rows=rows, size=len(rows),
                        last_seq=rows[-1]["_ts_seq"] if rows else None)
        spec = self.server._table(table)
        if scope != spec.scope:
            raise MemoryServerError(f"{table}: scope column is {spec.scope!r}, not {scope!r}")
        if self.system_id is not None and system_id != self.system_id:
            return Page(rows=[], size=0, last_seq=None)  # RLS hides other systems' rows
        rows = self.server.pull(table, cursor=cursor, after_seq=after_seq, limit=limit,
                                system_id=system_id)
        return Page(rows=rows, size=len(rows), last_seq=rows[-1]["_ts_seq"] if rows else None)

    def probe(self) -> bool:
        """Always reachable (in process)."""
        return True

    def close(self) -> None:
        """Nothing to release."""
