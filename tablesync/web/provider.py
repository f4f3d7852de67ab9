"""The seam between the status page and whatever knows the sync state.

The engine implements :class:`StatusProvider`; :class:`MemoryStatusProvider` is the
in-package fake (tests, demos, a status page without an engine). Stdlib only.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from tablesync.errors import StoreError
from tablesync.metrics import Metrics
from tablesync.parked import ParkedRecord, write_backup
from tablesync.status import StatusSnapshot

CONFLICT_FIELDS = ("table", "record_id", "winner", "loser", "resolved_at", "reason")


@runtime_checkable
class StatusProvider(Protocol):
    """What the status page needs from a running system. Called from server threads."""

    def snapshot(self) -> StatusSnapshot:
        """The current status (cheap; polled about four times a second per open page)."""
        ...

    def conflicts(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` conflicts, newest first; keys as :data:`CONFLICT_FIELDS`."""
        ...

    def request_sync(self) -> None:
        """Ask for a sync cycle soon; must not block on the cycle itself."""
        ...

    def metrics(self) -> Metrics:
        """The engine's latency histograms and counters."""
        ...


@runtime_checkable
class ParkedStore(Protocol):
    """Parked pushes and refused pulls (the engine's :class:`~tablesync.store.LocalStore`;
    see :mod:`tablesync.parked`). Called from server threads."""

    def parked_records(self, limit: int = 1000) -> list[ParkedRecord]:
        """Every record waiting for a human, with its reason."""
        ...

    def retry_parked(self, table: str, record_id: str, kind: str | None = None) -> int:
        """Release one record for the next push / catch-up."""
        ...

    def drop_parked(self, table: str, record_id: str, backup_dir: Path | None = None,
                    kind: str | None = None) -> Path:
        """Give one record up after a 0600 backup; the backup's path."""
        ...


def parked_store(provider: StatusProvider) -> ParkedStore | None:
    """Where ``provider``'s parked records live: itself, its ``store`` (the engine), or
    None (the page then shows counts only)."""
    for candidate in (provider, getattr(provider, "store", None)):
        if isinstance(candidate, ParkedStore):
            return candidate
    return None


class MemoryStatusProvider:
    """A settable, thread-safe :class:`StatusProvider` for tests and demos."""

    def __init__(
        self, snapshot: StatusSnapshot, *, on_sync: Callable[[], None] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._snapshot = snapshot
        self._conflicts: list[dict[str, Any]] = []
        self._metrics = Metrics()
        self._on_sync = on_sync
        self._parked: list[ParkedRecord] = []
        self.backup_dir = Path(tempfile.gettempdir())
        self.sync_requests = 0

    def set_snapshot(self, snapshot: StatusSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def add_conflict(self, conflict: dict[str, Any]) -> None:
        """Record a conflict (newest first); it must carry :data:`CONFLICT_FIELDS`."""
        missing = [k for k in CONFLICT_FIELDS if k not in conflict]
        if missing:
            raise ValueError(f"conflict record lacks {', '.join(missing)}")
        with self._lock:
            self._conflicts.insert(0, dict(conflict))

    def add_parked(self, record: ParkedRecord) -> None:
        """List a parked push or refused pull (the snapshot's ``parked`` count follows)."""
        with self._lock:
            self._parked.append(record)

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            pushes = sum(r.kind == "push" for r in self._parked)
            if not self._parked:
                return self._snapshot
            return replace(self._snapshot, parked=pushes,
                           refused=len(self._parked) - pushes)

    def parked_records(self, limit: int = 1000) -> list[ParkedRecord]:
        with self._lock:
            return list(self._parked[:limit])

    def retry_parked(self, table: str, record_id: str, kind: str | None = None) -> int:
        return len(self._take(table, record_id, kind))

    def drop_parked(self, table: str, record_id: str, backup_dir: Path | None = None,
                    kind: str | None = None) -> Path:
        taken = self._take(table, record_id, kind)
        return write_backup(backup_dir or self.backup_dir, table, record_id,
                            {"table": table, "record_id": record_id,
                             "records": [r.to_dict() for r in taken]})

    def _take(self, table: str, record_id: str, kind: str | None) -> list[ParkedRecord]:
        with self._lock:
            taken = [r for r in self._parked if (r.table, r.record_id) == (table, record_id)
                     and kind in (None, r.kind)]
            if not taken:
                raise StoreError(f"no parked record {table} {record_id!r}")
            self._parked = [r for r in self._parked if r not in taken]
        return taken

    def conflicts(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._conflicts[:limit]]

    def request_sync(self) -> None:
        with self._lock:
            self.sync_requests += 1
        if self._on_sync is not None:
            self._on_sync()

    def metrics(self) -> Metrics:
        return self._metrics
