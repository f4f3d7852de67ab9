"""The seam between the status page and whatever knows the sync state.

The engine implements :class:`StatusProvider`; :class:`MemoryStatusProvider` is the
in-package fake (tests, demos, a status page without an engine). Stdlib only.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Protocol, runtime_checkable

from tablesync.metrics import Metrics
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

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            return self._snapshot

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
