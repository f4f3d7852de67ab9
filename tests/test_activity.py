"""tablesync.activity: counts per table and minute, progress, next retry (fake clock)."""

from __future__ import annotations

import threading

import pytest

from tablesync.activity import MINUTES, Activity
from tablesync.status import StatusSnapshot


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
