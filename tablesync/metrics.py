"""Sync metrics: latency histograms and counters.

The engine owns one :class:`Metrics` and feeds it (``metrics.push_latency.observe(0.12)``,
``metrics.changes_pushed.inc(100)``); ``/metrics`` (:mod:`tablesync.web.prometheus`) reads
it together with a :class:`~tablesync.status.StatusSnapshot` and serves both through
prometheus-client. Pure stdlib, so the engine does not need prometheus-client; thread-safe
(the engine writes from its thread, the web server reads from another).
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Sequence

from tablesync.activity import Activity

# Seconds; sized for a REST round trip (ms) up to a large batch on a slow link (30 s).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(frozen=True)
class HistogramSample:
    """A consistent copy of a histogram: cumulative counts per upper bound (incl. +Inf)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """Prometheus-style histogram with fixed, cumulative ``le`` buckets."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if len(set(bounds)) != len(bounds) or any(math.isnan(b) for b in bounds):
            raise ValueError(f"histogram buckets must be distinct numbers, got {list(buckets)}")
        self._bounds = tuple(bounds) + (math.inf,)
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Record one duration (negative or NaN values are refused)."""
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"histogram observation must be >= 0 seconds, got {seconds!r}")
        index = next(i for i, bound in enumerate(self._bounds) if seconds <= bound)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe how long the ``with`` block took (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)

    def sample(self) -> HistogramSample:
        """A consistent snapshot with cumulative bucket counts."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for c in counts:
            running += c
            cumulative.append(running)
        return HistogramSample(self._bounds, tuple(cumulative), total, running)


class Counter:
    """A monotonically increasing count."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def inc(self, amount: int = 1) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up, got inc({amount})")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


@dataclass
class Metrics:
    """What the engine measures beyond the status snapshot."""

    push_latency: Histogram = field(default_factory=Histogram)
    pull_latency: Histogram = field(default_factory=Histogram)
    changes_pushed: Counter = field(default_factory=Counter)
    changes_pulled: Counter = field(default_factory=Counter)
    sync_cycles: Counter = field(default_factory=Counter)
    sync_errors: Counter = field(default_factory=Counter)
    activity: Activity = field(default_factory=Activity)  # per table / minute, progress


def unix_seconds(iso: str | None) -> float:
    """ISO-8601 time to unix seconds (naive = UTC); 0.0 for "never"."""
    if not iso:
        return 0.0
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
