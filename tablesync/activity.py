"""What the engine has been doing: pushed/pulled counts per table and per minute, the
progress of the running push drain and catch-up, and when the next retry is due.

One thread-safe :class:`Activity` per engine (it lives in :class:`~tablesync.metrics.Metrics`,
so the push/pull code that already feeds the counters feeds it too).
:meth:`Activity.decorate` adds it to a :class:`~tablesync.status.StatusSnapshot`. Pure:
the clock is injected; memory is bounded (:data:`MINUTES` one-minute buckets).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable

from tablesync.events import PROBE_TIMER, RETRY_TIMER
from tablesync.status import StatusSnapshot

MINUTES = 60                  # per-minute buckets kept (the page's chart)
RETRY_TIMERS = (RETRY_TIMER, PROBE_TIMER)  # machine timers whose due time is "the next retry"


def iso(t: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds and ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class _Run:
    """One push drain or catch-up: when it started and how many records it moved."""

    def __init__(self, now: float) -> None:
        self.started, self.done = now, 0


class Activity:
    """Counters the status page reads; every method is cheap and thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tables: dict[str, list[int]] = {}          # table -> [pushed, pulled]
        self._minutes: deque[list[int]] = deque(maxlen=MINUTES)  # [minute, pushed, pulled]
        self._push: _Run | None = None
        self._pull: _Run | None = None
        self._timers: dict[str, float] = {}              # timer name -> due (unix s)

    # -- fed by the push/pull code ---------------------------------------------------

    def pushed(self, table: str, n: int = 1) -> None:
        """``n`` records of ``table`` were acknowledged by the server."""
        self._count(table, n, 0)

    def pulled(self, table: str, n: int = 1) -> None:
        """``n`` server rows of ``table`` were received (catch-up or Realtime)."""
        self._count(table, 0, n)

    def push_started(self) -> None:
        """A push run begins (the first of a drain starts the drain's progress)."""
        with self._lock:
            if self._push is None:
                self._push = _Run(self._clock())

    def push_finished(self, backlog: bool) -> None:
        """A push run ended; without ``backlog`` the drain is over."""
        if not backlog:
            with self._lock:
                self._push = None

    def pull_started(self) -> None:
        with self._lock:
            self._pull = _Run(self._clock())

    def pull_finished(self) -> None:
        with self._lock:
            self._pull = None

    def schedule(self, name: str, delay: float) -> None:
        """The machine armed timer ``name`` for ``delay`` seconds from now."""
        with self._lock:
            self._timers[name] = self._clock() + max(0.0, delay)

    def cancel(self, name: str) -> None:
        with self._lock:
            self._timers.pop(name, None)

    def _count(self, table: str, pushed: int, pulled: int) -> None:
        if pushed < 0 or pulled < 0:
            raise ValueError(f"activity counts only go up, got {pushed}/{pulled} for {table}")
        now = self._clock()
        minute = int(now // 60)
        with self._lock:
            t = self._tables.setdefault(table, [0, 0])
            t[0] += pushed
            t[1] += pulled
            if not self._minutes or self._minutes[-1][0] != minute:
                self._minutes.append([minute, 0, 0])
            self._minutes[-1][1] += pushed
            self._minutes[-1][2] += pulled
            for run, n in ((self._push, pushed), (self._pull, pulled)):
                if run is not None:
                    run.done += n

    # -- read by the status provider ---------------------------------------------------

    def decorate(self, snap: StatusSnapshot) -> StatusSnapshot:
        """``snap`` with this activity: per-table pushed/pulled merged into ``tables``,
        ``push``/``pull`` progress (rate over the run so far; push ETA from the records
        still queued), ``per_minute`` (the last :data:`MINUTES` minutes, oldest first,
        zeros included) and ``next_retry_at``."""
        now = self._clock()
        with self._lock:
            tables = {name: dict(counts) for name, counts in snap.tables.items()}
            for name, (pushed, pulled) in self._tables.items():
                row = tables.setdefault(name, {})
                row["pushed"], row["pulled"] = pushed, pulled
            buckets = {m: (p, q) for m, p, q in self._minutes}
            push = self._progress(self._push, now, _remaining(snap))
            pull = self._progress(self._pull, now, None)
            due = [t for name, t in self._timers.items() if name in RETRY_TIMERS and t > now]
        last = int(now // 60)
        per_minute = [{"minute": iso(m * 60), "pushed": buckets.get(m, (0, 0))[0],
                       "pulled": buckets.get(m, (0, 0))[1]}
                      for m in range(last - MINUTES + 1, last + 1)]
        return replace(snap, tables=tables, push=push, pull=pull, per_minute=per_minute,
                       next_retry_at=iso(min(due)) if due else None)

    @staticmethod
    def _progress(run: _Run | None, now: float, remaining: int | None) -> dict[str, Any] | None:
        if run is None:
            return None
        elapsed = max(now - run.started, 1e-3)
        rate = run.done / elapsed
        eta = remaining / rate if remaining is not None and rate > 0 else None
        total = run.done + remaining if remaining is not None else None
        return {"started_at": iso(run.started), "done": run.done, "remaining": remaining,
                "total": total, "rate_per_s": round(rate, 2),
                "eta_s": round(eta, 1) if eta is not None else None}


def _remaining(snap: StatusSnapshot) -> int:
    """Records still queued for push (per-table counts when known, else queue entries)."""
    if snap.tables:
        return sum(int(t.get("queued_records", 0)) for t in snap.tables.values())
    return snap.queue_depth
