"""Sync metrics: latency histograms, counters, and the Prometheus text rendering.

The engine owns one :class:`Metrics` and feeds it (``metrics.push_latency.observe(0.12)``,
``metrics.changes_pushed.inc(100)``); ``/metrics`` renders it together with a
:class:`~tablesync.status.StatusSnapshot` via :func:`render_prometheus` in the Prometheus
text exposition format 0.0.4. Pure stdlib; thread-safe (the engine writes from its
thread, the web server reads from another).
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence

from tablesync.status import StatusSnapshot, health

PREFIX = "tablesync_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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


def render_prometheus(snapshot: StatusSnapshot, metrics: Metrics) -> str:
    """The Prometheus text exposition (format 0.0.4) of one system's sync."""
    labels = {"system_id": snapshot.system_id}
    lines: list[str] = []
    for name, kind, help_text, value in _gauges(snapshot):
        lines += _family(name, kind, help_text)
        lines.append(_sample(name, labels, value))
    lines += _family("status_indicator", "gauge",
                     "1 for the status page's current traffic-light colour, else 0.")
    for color in ("green", "yellow", "red"):
        value = _flag(snapshot.indicator == color)
        lines.append(_sample("status_indicator", {**labels, "color": color}, value))
    for name, help_text, counter in _counters(metrics):
        lines += _family(name, "counter", help_text)
        lines.append(_sample(name, labels, float(counter.value)))
    for name, help_text, hist in _histograms(metrics):
        lines += _family(name, "histogram", help_text)
        lines += _histogram_lines(name, labels, hist.sample())
    return "\n".join(lines) + "\n"


def unix_seconds(iso: str | None) -> float:
    """ISO-8601 time to unix seconds (naive = UTC); 0.0 for "never"."""
    if not iso:
        return 0.0
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _gauges(s: StatusSnapshot) -> list[tuple[str, str, str, float]]:
    healthy, _ = health(s)
    return [
        ("engine_up", "gauge", "1 when the sync engine thread is running, else 0.",
         _flag(s.engine_alive)),
        ("healthy", "gauge", "1 when /healthz answers 200, else 0.", _flag(healthy)),
        ("last_successful_sync_timestamp_seconds", "gauge",
         "Unix time of the last successful sync cycle; 0 if never.", unix_seconds(s.last_sync_at)),
        ("queue_depth", "gauge", "Local changes waiting to be pushed.", float(s.queue_depth)),
        ("oldest_queued_change_age_seconds", "gauge",
         "Age of the oldest unpushed local change; 0 when the queue is empty.",
         float(s.oldest_queued_age_s or 0.0) if s.queue_depth else 0.0),
        ("conflicts_last_24h", "gauge",
         "Concurrent writes overwritten by the conflict rule in the last 24 hours.",
         float(s.conflicts_24h)),
        ("parked_records", "gauge",
         "Records the server refused (e.g. 403); kept locally, need a human.", float(s.parked)),
        ("websocket_connected", "gauge", "1 when the Realtime websocket is connected, else 0.",
         _flag(s.websocket == "connected")),
        ("websocket_down_seconds", "gauge",
         "Seconds the websocket has been down; 0 when connected or off.",
         float(s.websocket_down_s) if s.websocket == "disconnected" else 0.0),
        ("consecutive_errors", "gauge", "Failed sync cycles in a row.",
         float(s.consecutive_errors)),
        ("reauth_required", "gauge", "1 when the stored login is dead; run `tablesync login`.",
         _flag(s.reauth_required)),
    ]


def _counters(m: Metrics) -> list[tuple[str, str, Counter]]:
    return [
        ("changes_pushed_total", "Local changes acknowledged by the server.", m.changes_pushed),
        ("changes_pulled_total", "Remote changes applied locally.", m.changes_pulled),
        ("sync_cycles_total", "Sync cycles completed successfully.", m.sync_cycles),
        ("sync_errors_total", "Sync cycles that failed.", m.sync_errors),
    ]


def _histograms(m: Metrics) -> list[tuple[str, str, Histogram]]:
    return [
        ("push_latency_seconds", "Duration of one push batch round trip.", m.push_latency),
        ("pull_latency_seconds", "Duration of one pull (catch-up page) round trip.",
         m.pull_latency),
    ]


def _family(name: str, kind: str, help_text: str) -> list[str]:
    full = PREFIX + name
    return [f"# HELP {full} {_escape_help(help_text)}", f"# TYPE {full} {kind}"]


def _histogram_lines(name: str, labels: dict[str, str], h: HistogramSample) -> list[str]:
    out = [
        _sample(f"{name}_bucket", {**labels, "le": format_value(bound)}, float(count))
        for bound, count in zip(h.bounds, h.cumulative)
    ]
    out.append(_sample(f"{name}_sum", labels, h.sum))
    out.append(_sample(f"{name}_count", labels, float(h.count)))
    return out


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    return f"{PREFIX}{name}{_labels(labels.items())} {format_value(value)}"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``NaN``, integers without ``.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0
