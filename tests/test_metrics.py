"""tablesync.metrics (histograms, counters) and tablesync.web.prometheus (what /metrics serves)."""

from __future__ import annotations

import math
import re
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from promtext import ExpositionError, parse
from tablesync.metrics import Counter, Histogram, Metrics, unix_seconds
from tablesync.status import QUEUE_ALERT_DEPTH, StatusSnapshot
from tablesync.web.prometheus import CONTENT_TYPE, engine_registry, exposition, render_prometheus

BASE = StatusSnapshot(
    system_id="sys-a", state="Connected", engine_alive=True, queue_depth=0,
    last_sync_at="2026-11-24T21:00:00+00:00", websocket="connected",
)


def _value(families: dict, name: str, **labels: str) -> float:
    wanted = {"system_id": "sys-a", **labels}
    matches = [v for n, lab, v in families[_family(name)].samples if n == name and lab == wanted]
    assert len(matches) == 1, (name, labels, families[_family(name)].samples)
    return matches[0]


def _family(sample: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and "latency" in sample:
            return sample[: -len(suffix)]
    return sample


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    h = Histogram([0.1, 1.0, 0.5])
    for seconds in (0.05, 0.1, 0.3, 0.7, 2.0, 0.0):
        h.observe(seconds)
    s = h.sample()
    assert s.bounds == (0.1, 0.5, 1.0, math.inf)
    assert s.cumulative == (3, 4, 5, 6)  # le is inclusive: 0.1 falls in le=0.1
    assert s.count == 6
    assert s.sum == pytest.approx(3.15)


@pytest.mark.parametrize("bad", [-0.001, math.nan])
def test_histogram_refuses_negative_and_nan(bad: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        Histogram().observe(bad)


def test_histogram_refuses_duplicate_buckets() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Histogram([1.0, 1.0])


def test_counter_only_goes_up_and_is_thread_safe() -> None:
    c = Counter()
    threads = [threading.Thread(target=lambda: [c.inc() for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value == 4000
    with pytest.raises(ValueError):
        c.inc(-1)


def test_render_is_valid_exposition_with_all_required_families() -> None:
    m = Metrics()
    m.push_latency.observe(0.02)
    m.push_latency.observe(3.0)
    m.pull_latency.observe(0.2)
    m.changes_pushed.inc(7)
    snap = replace(BASE, queue_depth=5, oldest_queued_age_s=42.5, parked=2, conflicts_24h=3)
    fams = parse(render_prometheus(snap, m))
    for name in ("engine_up", "last_successful_sync_timestamp_seconds", "queue_depth",
                 "oldest_queued_change_age_seconds", "conflicts_last_24h", "parked_records",
                 "websocket_connected", "push_latency_seconds", "pull_latency_seconds"):
        fam = fams[f"tablesync_{name}"]
        assert fam.help, name
        assert fam.type != "untyped", name
    assert all(name.startswith("tablesync_") for name in fams)
    assert _value(fams, "tablesync_queue_depth") == 5
    assert _value(fams, "tablesync_oldest_queued_change_age_seconds") == 42.5
    assert _value(fams, "tablesync_parked_records") == 2
    assert _value(fams, "tablesync_conflicts_last_24h") == 3
    assert _value(fams, "tablesync_websocket_connected") == 1
    assert _value(fams, "tablesync_engine_up") == 1
    assert _value(fams, "tablesync_changes_pushed_total") == 7
    expected_ts = datetime(2026, 11, 24, 21, tzinfo=timezone.utc).timestamp()
    assert _value(fams, "tablesync_last_successful_sync_timestamp_seconds") == expected_ts
    assert fams["tablesync_push_latency_seconds"].type == "histogram"
    assert _value(fams, "tablesync_push_latency_seconds_count") == 2
    assert _value(fams, "tablesync_push_latency_seconds_sum") == pytest.approx(3.02)
    assert _value(fams, "tablesync_push_latency_seconds_bucket", le="0.025") == 1
    assert _value(fams, "tablesync_push_latency_seconds_bucket", le="5.0") == 2
    assert _value(fams, "tablesync_pull_latency_seconds_bucket", le="+Inf") == 1
    # red (parked) -> exactly one colour set
    assert _value(fams, "tablesync_status_indicator", color="red") == 1
    assert _value(fams, "tablesync_status_indicator", color="green") == 0


def test_render_offline_dead_engine_never_synced() -> None:
    snap = replace(BASE, state="Disconnected", engine_alive=False, last_sync_at=None,
                   websocket="disconnected", websocket_down_s=99.0,
                   queue_depth=QUEUE_ALERT_DEPTH)
    fams = parse(render_prometheus(snap, Metrics()))
    assert _value(fams, "tablesync_engine_up") == 0
    assert _value(fams, "tablesync_healthy") == 0
    assert _value(fams, "tablesync_websocket_connected") == 0
    assert _value(fams, "tablesync_websocket_down_seconds") == 99
    assert _value(fams, "tablesync_last_successful_sync_timestamp_seconds") == 0
    assert _value(fams, "tablesync_push_latency_seconds_count") == 0
    assert _value(fams, "tablesync_push_latency_seconds_bucket", le="+Inf") == 0


def test_empty_queue_reports_zero_age_even_if_stale_age_given() -> None:
    snap = replace(BASE, queue_depth=0, oldest_queued_age_s=12.0)
    fams = parse(render_prometheus(snap, Metrics()))
    assert _value(fams, "tablesync_oldest_queued_change_age_seconds") == 0


def test_label_values_are_escaped() -> None:
    snap = replace(BASE, system_id='we"ird\\id\nx')
    fams = parse(render_prometheus(snap, Metrics()))
    (_, labels, _), = fams["tablesync_queue_depth"].samples
    assert labels == {"system_id": 'we"ird\\id\nx'}


def test_content_type_is_0_0_4() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_unix_seconds_naive_is_utc() -> None:
    assert unix_seconds("1970-01-01T00:01:00") == 60.0
    assert unix_seconds("1970-01-01T01:01:00+01:00") == 60.0
    assert unix_seconds(None) == 0.0


@pytest.mark.parametrize("bad", [
    "tablesync_x 1",                                      # no trailing newline
    "tablesync_x{a=\"1\"} 1\ntablesync_y 1\ntablesync_x{a=\"2\"} 1\n",  # interleaved
    "tablesync_x 1\n# TYPE tablesync_x gauge\n",          # TYPE after samples
    "tablesync_x{a=\"1\",a=\"2\"} 1\n",                   # duplicate label
    "tablesync_x{a=\"\\q\"} 1\n",                         # bad escape
    "tablesync_x one\n",                                  # bad value
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
])
def test_parser_rejects_malformed_exposition(bad: str) -> None:
    """The validator is not a rubber stamp."""
    with pytest.raises(ExpositionError):
        parse(bad)


def test_docs_list_exactly_the_rendered_metric_families() -> None:
    """docs/operations.md's metrics table stays true to what /metrics serves."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(tablesync_[a-z0-9_]+)", doc, flags=re.M))
    served = parse(exposition(engine_registry(lambda: BASE, Metrics)))
    assert documented == {name for name in served if name.startswith("tablesync_")}


def test_histogram_time_observes_the_block_even_when_it_raises() -> None:
    h = Histogram([0.5])
    with h.time():
        pass
    with pytest.raises(RuntimeError), h.time():
        raise RuntimeError("push failed")
    s = h.sample()
    assert s.count == 2 and s.cumulative[0] == 2
    assert 0 <= s.sum < 0.5


def _served(snapshot: StatusSnapshot = BASE, metrics: Metrics | None = None) -> str:
    m = metrics or Metrics()
    return exposition(engine_registry(lambda: snapshot, lambda: m))


def test_metrics_parse_with_prometheus_clients_own_parser() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.pull_latency.observe(0.3)
    m.sync_errors.inc(2)
    families = {f.name: f for f in text_string_to_metric_families(_served(BASE, m))}
    assert families["tablesync_pull_latency_seconds"].type == "histogram"
    assert families["tablesync_sync_errors"].type == "counter"  # the parser drops _total
    (errors,) = families["tablesync_sync_errors"].samples
    assert errors.name == "tablesync_sync_errors_total" and errors.value == 2
    assert errors.labels == {"system_id": "sys-a"}


def test_metrics_include_process_platform_and_build_info() -> None:
    from importlib import metadata

    fams = parse(_served())  # also our strict parser: one exposition, no clashes
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds", "python_info"):
        assert name in fams, name
    assert fams["process_resident_memory_bytes"].samples[0][2] > 0
    (sample,) = fams["tablesync_build_info"].samples
    name, labels, value = sample
    assert value == 1
    assert labels["version"] == metadata.version("tablesync")
    assert labels["python"] == ".".join(map(str, __import__("sys").version_info[:3]))


def test_each_engine_has_its_own_registry() -> None:
    """Two engines in one process (the demo) each get their families; nothing global."""
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()
    a.changes_pushed.inc(3)
    b.changes_pushed.inc(5)
    snap_b = replace(BASE, system_id="sys-b")
    text_a, text_b = _served(BASE, a), _served(snap_b, b)
    assert 'tablesync_changes_pushed_total{system_id="sys-a"} 3.0' in text_a
    assert 'tablesync_changes_pushed_total{system_id="sys-b"} 5.0' in text_b
    assert "sys-b" not in text_a
    assert REGISTRY.get_sample_value("tablesync_build_info") is None
