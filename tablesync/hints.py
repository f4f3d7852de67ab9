"""Realtime changes applied locally, as hints: a change that cannot be applied here is
never dropped, it is handed to a catch-up (the REST pull from the cursor, which the engine
retries with backoff until it succeeds).

Runs in the engine's Realtime thread; touches no cycle state (only :meth:`Cycles.complete`,
:meth:`Cycles.admit` and :meth:`Cycles.apply_exits`, which are safe there).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from tablesync.causes import Cause, classify
from tablesync.cycles import Cycles
from tablesync.errors import PayloadError, StoreError
from tablesync.metrics import Metrics
from tablesync.model import EXITS_TABLE, Change
from tablesync.project import Project
from tablesync.remote.base import ChangeEvent, validate_row
from tablesync.store import LocalStore

log = logging.getLogger("tablesync.engine")

__all__ = ["RealtimeApply"]

CatchUp = Callable[[str, Cause], None]


class RealtimeApply:
    """Applies one Realtime :class:`ChangeEvent` to the local store.

    Args:
        project, store, cycles: what to apply to (``cycles`` None: local-only).
        metrics: ``changes_pulled`` is fed.
        notify: called with the changes applied (the engine's callbacks).
        catch_up: ``catch_up(why, cause)`` asks for a catch-up that covers the change
            (``cause`` NONE when nothing is wrong here, e.g. a partial record).
    """

    def __init__(self, project: Project, store: LocalStore, cycles: Cycles | None, *,
                 metrics: Metrics, notify: Callable[[Iterable[Change]], None],
                 catch_up: CatchUp) -> None:
        self.project, self.store, self.cycles = project, store, cycles
        self.metrics, self._notify, self._catch_up = metrics, notify, catch_up
        self._specs = {t.name: t for t in project.tables}

    def apply(self, event: ChangeEvent) -> None:
        """Apply ``event``, or ask for a catch-up when it cannot be applied now."""
        if event.table == EXITS_TABLE:
            self._apply_exit(event)
            return
        spec = self._specs.get(event.table)
        if spec is None:
            return
        if event.type == "DELETE":
            log.info("engine: ignoring a hard DELETE on %s (sync deletes are tombstones)",
                     event.table)
            return
        try:
            if event.errors:
                raise PayloadError(f"realtime {event.table}: {', '.join(event.errors)}")
            row = validate_row(spec, event.record, partial=True,
                               where=f"realtime {event.table}")
        except PayloadError as exc:
            log.warning("engine: %s", exc)
            self._catch_up(str(exc), Cause.NONE)   # the REST catch-up reads it properly
            return
        rows: list[dict[str, Any]] | None = [row]
        if any(c not in row for c in spec.column_names) or "_ts_hlc" not in row:
            # hosted Realtime leaves unchanged TOASTed values (> ~2 KB) out of UPDATE
            # records: fetch just this record instead of a whole catch-up
            rows = self.cycles.complete(spec, row) if self.cycles is not None else None
            if rows is None:
                self._catch_up(f"realtime {spec.name}: partial record", Cause.NONE)
                return
        try:
            if rows and self.cycles is not None:
                rows = self.cycles.admit(spec, rows)  # beyond the clock bound: recorded only
            applied = self.store.apply_remote(spec.name, rows) if rows else []
        except StoreError as exc:
            cause = classify(exc)
            log.error("engine: cannot apply a realtime change (%s); a catch-up retries "
                      "it: %s", cause.value, exc)
            self._catch_up(f"cannot apply a realtime {spec.name} change: {exc}", cause)
            return
        self.metrics.changes_pulled.inc(len(applied))
        self.metrics.activity.pulled(spec.name, len(rows or []))
        self._notify(applied)

    def _apply_exit(self, event: ChangeEvent) -> None:
        """A record left this system's scope on the server (a ``tablesync_exits`` INSERT)."""
        if event.type != "INSERT" or self.cycles is None:
            return
        try:
            self.cycles.apply_exits([event.record])
        except StoreError as exc:
            cause = classify(exc)
            log.error("engine: cannot apply a realtime exit (%s); a catch-up retries it: "
                      "%s", cause.value, exc)
            self._catch_up(f"cannot apply a realtime exit: {exc}", cause)
