"""Which synced tables the server is behind on: a table, its apply function or a column
this project declares that the server does not have yet (``supabase.sql`` not applied).

Each table is probed once per engine (one ``GET /rest/v1/<table>?select=<every declared
and version column>&limit=0``, :meth:`RestRemote.probe_columns`) before its first push or
pull, and again whenever a push or pull is answered with one of PostgREST's "not in the
schema" errors (:func:`tablesync.remote.base.server_behind`). A table found behind is
*held*: its queue entries stay pending (nothing is sent, so no value is dropped; the queue
holds keys and the values stay in the local table), one warning is logged, and the status
names the table and the missing columns. Held tables are probed again at most every
``reprobe_s`` seconds (and on every ``sync now``); when the server has caught up the table
is released (one info line) and its held rows go out with the new columns' values.

A table whose server copy lacks columns is still pulled: rows missing exactly those
columns are applied without them (the local values stay), instead of being refused one
by one. See docs/backfill.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tablesync.errors import PayloadError, RemoteError
from tablesync.model import TableSpec
from tablesync.remote.base import server_behind, validate_row

__all__ = ["Behind", "ServerSchema", "VERSION_COLUMNS", "partial_rows"]

log = logging.getLogger("tablesync.engine")

VERSION_COLUMNS = ("_ts_hlc", "_ts_origin", "_ts_deleted", "_ts_base_hlc",
                   "_ts_base_origin", "_ts_seq", "_ts_xid")


@dataclass(frozen=True)
class Behind:
    """What the server lacks of one table: the table (or its apply function) or columns."""

    table: str
    missing_table: bool = False
    columns: tuple[str, ...] = ()
    detail: str = ""

    @property
    def reason(self) -> str:
        """One line for the status and the log."""
        if self.missing_table:
            what = f"the server has no table (or apply function) for {self.table}"
        else:
            cols = ", ".join(self.columns) or "?"
            what = f"the server's table {self.table} lacks column(s) {cols}"
        return (f"{what}: its changes are held (nothing is lost) until the server is "
                f"migrated (apply the current supabase.sql)")


class ServerSchema:
    """Held tables of one engine (called from its I/O thread only).

    Args:
        tables: the project's table specs.
        probe: ``probe(table, columns)`` raising the server's error when it lacks them
            (None: the remote cannot tell, every table is taken as present).
        reprobe_s: how often a held table is probed again.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, tables: Sequence[TableSpec],
                 probe: Callable[[str, Sequence[str]], Any] | None, *,
                 reprobe_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._specs = {t.name: t for t in tables}
        self._probe = probe
        self.reprobe_s = reprobe_s
        self._clock = clock
        self.held: dict[str, Behind] = {}
        self._checked: set[str] = set()
        self._due = 0.0

    @property
    def held_tables(self) -> frozenset[str]:
        """Tables whose pushes are held."""
        return frozenset(self.held)

    def missing_columns(self, table: str) -> frozenset[str]:
        """Columns the server's copy of ``table`` lacks (empty when not held for columns)."""
        b = self.held.get(table)
        return frozenset(b.columns) if b is not None and not b.missing_table else frozenset()

    def reasons(self) -> dict[str, str]:
        """Table -> the status line, for every held table."""
        return {t: b.reason for t, b in sorted(dict(self.held).items())}   # other threads

    def recheck(self) -> None:
        """Probe the held tables again at the next :meth:`check` (``sync now``)."""
        self._due = 0.0

    def check(self, *, force: bool = False) -> None:
        """Probe every table not probed yet, and the held ones when due (or ``force``).
        Raises the remote's error when a probe fails for another reason (network...)."""
        if self._probe is None:
            return
        now = self._clock()
        due = force or now >= self._due
        for name, spec in self._specs.items():
            if name in self._checked and not (name in self.held and due):
                continue
            self._probe_table(spec)
            self._checked.add(name)
        if due and self.held:
            self._due = now + self.reprobe_s

    def note_error(self, table: str, exc: BaseException) -> bool:
        """A push or pull of ``table`` failed with ``exc``: hold the table when ``exc``
        says the server lacks it or a column (probing it for the full list); whether it
        did."""
        kind = server_behind(exc)
        if kind is None or table not in self._specs:
            return False
        if self._probe is not None:
            try:
                self._probe_table(self._specs[table])
            except RemoteError:
                pass
        if table not in self.held:              # the probe saw nothing: hold on the error
            col = kind[1]
            self.hold(Behind(table, kind[0] == "table", (col,) if col else (), str(exc)))
        self._due = self._clock() + self.reprobe_s
        return True

    def _probe_table(self, spec: TableSpec) -> None:
        assert self._probe is not None
        columns = [*spec.column_names, *VERSION_COLUMNS]
        missing: list[str] = []
        for _ in range(len(columns) + 1):       # bounded: each round drops one column
            try:
                self._probe(spec.name, columns)
            except RemoteError as exc:
                kind = server_behind(exc)
                if kind is None:
                    raise
                if kind[0] == "table":
                    self.hold(Behind(spec.name, True, (), str(exc)))
                    return
                col = kind[1]
                if col is None or col not in columns:
                    self.hold(Behind(spec.name, False, tuple(missing) or ("?",), str(exc)))
                    return
                missing.append(col)
                columns.remove(col)
                continue
            break
        if missing:
            self.hold(Behind(spec.name, False, tuple(missing), ""))
        else:
            self._release(spec.name)

    def hold(self, behind: Behind) -> None:
        """Hold ``behind.table`` (logged once per distinct reason)."""
        old = self.held.get(behind.table)
        self.held[behind.table] = behind
        if old is None or old.reason != behind.reason:
            log.warning("engine: %s", behind.reason)

    def _release(self, table: str) -> None:
        if self.held.pop(table, None) is not None:
            log.info("engine: the server has caught up with table %s: pushing its held "
                     "changes", table)


def partial_rows(schema: ServerSchema, spec: TableSpec, rejected: Sequence[Any]
                 ) -> tuple[list[dict[str, Any]], list[int]]:
    """Pulled rows refused only because they lack columns the server is known to lack
    (:meth:`ServerSchema.missing_columns`): those rows (applied without the columns, which
    keep their local values) and their indexes in ``rejected``. Rows lacking anything
    else (a cut-down oversized row, a version column) stay refused."""
    known = schema.missing_columns(spec.name)
    rows: list[dict[str, Any]] = []
    taken: list[int] = []
    if not known:
        return rows, taken
    for i, raw in enumerate(rejected):
        if not isinstance(raw, dict) or not isinstance(raw.get("_ts_seq"), int):
            continue
        missing = {c for c in (*spec.column_names, *VERSION_COLUMNS) if c not in raw}
        if not missing or not missing <= known:
            continue
        try:
            validate_row(spec, raw, partial=True, where=f"pull {spec.name}")
        except PayloadError:
            continue
        rows.append(raw)
        taken.append(i)
    return rows, taken
