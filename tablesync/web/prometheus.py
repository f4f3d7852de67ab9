"""``/metrics`` through prometheus-client: the sync families, process metrics, build info.

The engine keeps feeding the stdlib :class:`~tablesync.metrics.Metrics`; at scrape time
:class:`SyncCollector` turns it and a :class:`~tablesync.status.StatusSnapshot` into metric
families. Each status app gets its own :class:`~prometheus_client.CollectorRegistry`
(:func:`engine_registry`), never the global one, so two engines in one process (the demo)
do not clash. The only module that imports prometheus-client.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tablesync.metrics import Counter, Histogram, Metrics, unix_seconds
from tablesync.status import StatusSnapshot, health

PREFIX = "tablesync_"
# The classic text format (prometheus-client's generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("system_id",)


class SyncCollector(Collector):
    """One system's sync metrics, read from ``snapshot()`` and ``metrics()`` per scrape."""

    def __init__(self, snapshot: Callable[[], StatusSnapshot],
                 metrics: Callable[[], Metrics]) -> None:
        self._snapshot = snapshot
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap, m = self._snapshot(), self._metrics()
        labels = [snap.system_id]
        for name, help_text, value in _gauges(snap):
            gauge = GaugeMetricFamily(PREFIX + name, help_text, labels=LABELS)
            gauge.add_metric(labels, value)
            yield gauge
        yield _indicator(snap)
        for name, help_text, counter in _counters(m):
            family = CounterMetricFamily(PREFIX + name, help_text, labels=LABELS)
            family.add_metric(labels, float(counter.value))
            yield family
        for name, help_text, hist in _histograms(m):
            yield _histogram(PREFIX + name, help_text, labels, hist)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the engine's status


def engine_registry(snapshot: Callable[[], StatusSnapshot],
                    metrics: Callable[[], Metrics]) -> CollectorRegistry:
    """A fresh registry for one engine: sync families, process, platform, build info."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncCollector(snapshot, metrics))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    build = Info("tablesync_build", "tablesync's version and the Python running it.",
                 registry=registry)
    build.info({"version": _version(), "python": platform.python_version()})
    return registry


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition (format 0.0.4) of everything in ``registry``."""
    return generate_latest(registry).decode("utf-8")


def render_prometheus(snapshot: StatusSnapshot, metrics: Metrics) -> str:
    """The sync families alone for one snapshot (no process or build metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncCollector(lambda: snapshot, lambda: metrics))
    return exposition(registry)


def _version() -> str:
    try:
        return metadata.version("tablesync")
    except metadata.PackageNotFoundError:
        return "unknown"


def _gauges(s: StatusSnapshot) -> list[tuple[str, str, float]]:
    healthy, _ = health(s)
    return [
        ("engine_up", "1 when the sync engine thread is running, else 0.",
         _flag(s.engine_alive)),
        ("healthy", "1 when /healthz answers 200, else 0.", _flag(healthy)),
        ("last_successful_sync_timestamp_seconds",
         "Unix time of the last successful sync cycle; 0 if never.", unix_seconds(s.last_sync_at)),
        ("queue_depth", "Local changes waiting to be pushed.", float(s.queue_depth)),
        ("oldest_queued_change_age_seconds",
         "Age of the oldest unpushed local change; 0 when the queue is empty.",
         float(s.oldest_queued_age_s or 0.0) if s.queue_depth else 0.0),
        ("conflicts_last_24h",
         "Concurrent writes overwritten by the conflict rule in the last 24 hours.",
         float(s.conflicts_24h)),
        ("parked_records",
         "Records the server refused (e.g. 403); kept locally, need a human.", float(s.parked)),
        ("websocket_connected", "1 when the Realtime websocket is connected, else 0.",
         _flag(s.websocket == "connected")),
        ("websocket_down_seconds",
         "Seconds the websocket has been down; 0 when connected or off.",
         float(s.websocket_down_s) if s.websocket == "disconnected" else 0.0),
        ("consecutive_errors", "Failed sync cycles in a row.", float(s.consecutive_errors)),
        ("reauth_required", "1 when the stored login is dead; run `tablesync login`.",
         _flag(s.reauth_required)),
    ]


def _indicator(s: StatusSnapshot) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + "status_indicator",
                               "1 for the status page's current traffic-light colour, else 0.",
                               labels=(*LABELS, "color"))
    for color in ("green", "yellow", "red"):
        family.add_metric([s.system_id, color], _flag(s.indicator == color))
    return family


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


def _histogram(name: str, help_text: str, labels: list[str],
               hist: Histogram) -> HistogramMetricFamily:
    sample = hist.sample()
    family = HistogramMetricFamily(name, help_text, labels=LABELS)
    buckets = [(floatToGoString(bound), float(count))  # type: ignore[no-untyped-call]
               for bound, count in zip(sample.bounds, sample.cumulative)]
    family.add_metric(labels, buckets, sample.sum)
    return family


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0
