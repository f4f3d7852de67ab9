"""tablesync.activity: counts per table and minute, progress, next retry (fake clock)."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from tablesync.activity import MINUTES, Activity
from tablesync.cycles import Cycles
from tablesync.metrics import Metrics
from tablesync.project import load_project
from tablesync.remote.memory import MemoryRemote, MemoryServer, ServerTable
from tablesync.snapshot import store_snapshot
from tablesync.status import StatusSnapshot
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _snap(queued_records: int = 0) -> StatusSnapshot:
    return StatusSnapshot("sys", "Syncing", True, queue_depth=queued_records,
                          tables={"projects": {"queued": queued_records,
                                               "queued_records": queued_records,
                                               "parked": 0, "refused": 0}})


def test_counts_per_table_and_per_minute() -> None:
    clock = Clock(1_800_000_000.0)              # a minute boundary
    a = Activity(clock)
    a.pushed("projects", 3)
    a.pulled("tasks", 2)
    clock.t += 61
    a.pushed("projects")
    snap = a.decorate(_snap())
    assert snap.tables["projects"]["pushed"] == 4 and snap.tables["projects"]["queued"] == 0
    assert snap.tables["tasks"] == {"pushed": 0, "pulled": 2}
    assert len(snap.per_minute) == MINUTES
    assert [(m["pushed"], m["pulled"]) for m in snap.per_minute[-2:]] == [(3, 2), (1, 0)]
    assert snap.per_minute[-1]["minute"] == "2027-01-15T08:01:00.000Z"
    clock.t += 3600                             # an hour later the buckets are gone
    assert all(m["pushed"] == 0 for m in a.decorate(_snap()).per_minute)


def test_push_progress_rate_and_eta() -> None:
    clock = Clock()
    a = Activity(clock)
    assert a.decorate(_snap()).push is None
    a.push_started()
    clock.t += 10
    a.pushed("projects", 100)
    a.push_finished(backlog=True)               # a run ended, the drain goes on
    a.push_started()
    push = a.decorate(_snap(queued_records=300)).push
    assert push is not None
    assert (push["done"], push["remaining"], push["total"]) == (100, 300, 400)
    assert push["rate_per_s"] == 10.0 and push["eta_s"] == 30.0
    a.push_finished(backlog=False)
    assert a.decorate(_snap()).push is None


def test_pull_progress_has_no_eta() -> None:
    clock = Clock()
    a = Activity(clock)
    a.pull_started()
    clock.t += 2
    a.pulled("projects", 50)
    pull = a.decorate(_snap()).pull
    assert pull is not None and pull["done"] == 50 and pull["rate_per_s"] == 25.0
    assert pull["eta_s"] is None and pull["total"] is None
    a.pull_finished()
    assert a.decorate(_snap()).pull is None


def test_next_retry_is_the_earliest_future_retry_or_probe() -> None:
    clock = Clock(1_800_000_000.0)
    a = Activity(clock)
    a.schedule("push", 5)                        # not a retry
    assert a.decorate(_snap()).next_retry_at is None
    a.schedule("retry", 30)
    a.schedule("probe", 10)
    assert a.decorate(_snap()).next_retry_at == "2027-01-15T08:00:10.000Z"
    a.cancel("probe")
    assert a.decorate(_snap()).next_retry_at == "2027-01-15T08:00:30.000Z"
    clock.t += 31                                # due and past: nothing announced
    assert a.decorate(_snap()).next_retry_at is None


def test_thread_safe_counts_and_refuses_negative() -> None:
    a = Activity()
    threads = [threading.Thread(target=lambda: [a.pushed("t") for _ in range(1000)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert a.decorate(_snap()).tables["t"]["pushed"] == 4000
    with pytest.raises(ValueError, match="only go up"):
        a.pulled("t", -1)


# -- fed by the real push/pull code (Cycles and Engine over the in-memory server) ---------

def _env(tmp: Path) -> tuple[Any, LocalStore, MemoryServer]:
    cfg = tmp / "sync.toml"
    tables = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
    cfg.write_text(f'[system]\nid = "system-a"\ndatabase = "{tmp / "a.db"}"\n[sync]\n'
                   f'batch_size = 3\n[paths]\nschemas = "{ROOT / "schemas"}"\n'
                   f'token_store = "{tmp / "auth.json"}"\nconflict_log = "{tmp / "c.log"}"\n'
                   "[tables.projects]" + tables)
    project = load_project(cfg)
    store = LocalStore.open(project)
    server = MemoryServer([ServerTable.from_spec(s) for s in project.tables])
    app = sqlite3.connect(project.config.database_path, isolation_level=None)
    app.executemany("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 'x')",
                    [(f"t{i:02d}",) for i in range(10)])
    app.close()
    return project, store, server


class Watching(MemoryRemote):
    """The in-memory server, noting the push progress the page would show at each apply."""

    def __init__(self, server: MemoryServer, store: LocalStore, metrics: Metrics) -> None:
        super().__init__(server, system_id="system-a")
        self.store, self.metrics = store, metrics
        self.seen: list[tuple[int, int]] = []

    def apply(self, table: str, rows: Any) -> Any:
        push = self.metrics.activity.decorate(store_snapshot(self.store, "system-a")).push
        assert push is not None
        self.seen.append((push["done"], push["total"]))
        return super().apply(table, rows)


def test_cycles_feed_per_table_counts_and_drain_progress(tmp_path: Path) -> None:
    project, store, server = _env(tmp_path)
    metrics = Metrics()
    remote = Watching(server, store, metrics)
    cycles = Cycles(project, store, remote, batch_size=3, metrics=metrics,
                    notify=lambda changes: None, on_error=lambda msg, cause: None)
    try:
        for _ in range(20):                     # bounded: 10 records in batches of 3
            if not cycles.push_batch(None).backlog:
                break
        # done grows batch by batch while the total stays the 10 records of the drain
        # (the pipeline may have a batch or two in flight when the next one is read)
        assert [d for d, _t in remote.seen] == sorted(d for d, _t in remote.seen)
        assert remote.seen[0][0] == 0 and {t for _d, t in remote.seen} == {10}
        snap = metrics.activity.decorate(store_snapshot(store, "system-a"))
        assert snap.push is None                                     # the drain is over
        assert snap.tables["tasks"]["pushed"] == 10 and snap.tables["tasks"]["queued"] == 0
        assert sum(m["pushed"] for m in snap.per_minute) == 10
        assert cycles.catch_up(None).outcome == "ok"
        snap = metrics.activity.decorate(store_snapshot(store, "system-a"))
        assert snap.pull is None and snap.tables["tasks"]["pulled"] == 10   # read back
    finally:
        store.close()


def test_the_engine_snapshot_carries_the_activity(tmp_path: Path) -> None:
    from tablesync.engine import Engine

    project, store, server = _env(tmp_path)
    with Engine(project, store=store, remote=MemoryRemote(server, system_id="system-a")) as e:
        summary = e.sync_once()
        assert summary.pushed == 10
        snap = e.snapshot()
    assert snap.tables["tasks"]["pushed"] == 10 and snap.tables["projects"]["pushed"] == 0
    assert len(snap.per_minute) == MINUTES and snap.push is None and snap.pull is None
    assert snap.to_dict()["tables"]["tasks"]["queued"] == 0


def test_a_failed_push_run_ends_the_drain_progress(tmp_path: Path) -> None:
    from tablesync.remote.rest import RestRemote

    project, store, _server = _env(tmp_path)
    metrics = Metrics()
    with socket.socket() as s:                  # a port nothing listens on: refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = RestRemote(f"http://127.0.0.1:{port}", "anon-key",
                      tables={t.name: t for t in project.tables})
    cycles = Cycles(project, store, down, batch_size=3,
                    metrics=metrics, notify=lambda changes: None, on_error=lambda msg, cause: None)
    try:
        assert cycles.push_batch(None).outcome == "transient"
        snap = metrics.activity.decorate(store_snapshot(store, "system-a"))
        assert snap.push is None and snap.tables["tasks"]["queued"] == 10
    finally:
        down.close()
        store.close()
