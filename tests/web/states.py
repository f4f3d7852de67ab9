"""The status page's main states, shared by the browser tests and the screenshot script
(``python -m tests.web.screenshots``). Not a test module.

Each state puts a :class:`MemoryStatusProvider` into one situation; the times are relative
to now so the page's "ago" and "in" texts read naturally.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from tablesync.activity import MINUTES, iso
from tablesync.parked import ParkedRecord
from tablesync.status import StatusSnapshot
from tablesync.web import MemoryStatusProvider

BIG = 117721298593447936  # an HLC beyond 2^53: 117721298593447940 through a JS number
BACKEND = "https://xyzcompany.supabase.co"


def _minutes(pushed: list[int], pulled: list[int]) -> list[dict[str, object]]:
    """``per_minute`` for the last hour ending now; the lists fill its newest minutes."""
    last = int(time.time() // 60)
    out = []
    for i, m in enumerate(range(last - MINUTES + 1, last + 1)):
        back = MINUTES - 1 - i
        out.append({"minute": iso(m * 60),
                    "pushed": pushed[-1 - back] if back < len(pushed) else 0,
                    "pulled": pulled[-1 - back] if back < len(pulled) else 0})
    return out


def _tables(**rows: tuple[int, int, int, int, int]) -> dict[str, dict[str, int]]:
    return {name: {"queued": q, "queued_records": q, "pushed": p, "pulled": pl, "parked": pk,
                   "refused": rf} for name, (q, p, pl, pk, rf) in rows.items()}


def green() -> StatusSnapshot:
    now = time.time()
    return StatusSnapshot(
        system_id="store-042", state="Connected", engine_alive=True, queue_depth=0,
        last_sync_at=iso(now - 4), websocket="connected", generated_at=iso(now),
        backend_url=BACKEND,
        tables=_tables(projects=(0, 1204, 318, 0, 0), tasks=(0, 15400, 2210, 0, 0)),
        per_minute=_minutes([0, 120, 800, 2400, 3900, 4100, 3800, 1500, 12, 3, 0, 5],
                            [4, 30, 12, 40, 80, 35, 20, 9, 300, 250, 7, 2]))


def pushing() -> StatusSnapshot:
    now = time.time()
    return replace(
        green(), state="Syncing", queue_depth=11_300, oldest_queued_at=iso(now - 320),
        oldest_queued_age_s=320.0,
        tables=_tables(projects=(0, 1204, 318, 0, 0), tasks=(11_300, 4100, 2210, 0, 0)),
        push={"started_at": iso(now - 61.5), "done": 4100, "remaining": 11_300,
              "total": 15_400, "rate_per_s": 66.67, "eta_s": 169.5},
        pull=None)


def offline_retrying() -> StatusSnapshot:
    now = time.time()
    return replace(
        green(), state="Disconnected", websocket="disconnected", websocket_down_s=95.0,
        queue_depth=42, oldest_queued_at=iso(now - 95), oldest_queued_age_s=95.0,
        tables=_tables(projects=(2, 1204, 318, 0, 0), tasks=(40, 15400, 2210, 0, 0)),
        consecutive_errors=4, last_error="backend unreachable: connection refused",
        next_retry_at=iso(now + 40))


def local_locked() -> StatusSnapshot:
    """A local failure, classified: red with its cause, not "server unreachable"."""
    now = time.time()
    return replace(
        green(), state="Connected", queue_depth=3, oldest_queued_at=iso(now - 40),
        oldest_queued_age_s=40.0, consecutive_errors=2, cause="local_locked",
        last_error="database is locked (another program holds a write lock on the file)",
        next_retry_at=iso(now + 4))


PARKED = (
    ParkedRecord("push", "tasks", "t-981", "permission denied for table tasks (42501): "
                 "row-level security refused the write", "2026-12-03T09:14:02.118Z", pending=2,
                 version=str(BIG), row={"id": "t-981", "title": "inventory count"}),
    ParkedRecord("pull", "projects", "p-17", "version 140737488355328000 is 3600 s ahead of "
                 "this machine's clock (max_clock_skew 300 s)", "2026-12-03T09:20:45.002Z",
                 tries=3, version="140737488355328000"),
)


def parked() -> StatusSnapshot:
    return replace(green(), tables=_tables(projects=(0, 1204, 318, 0, 1),
                                           tasks=(0, 15398, 2210, 1, 0)))


CONFLICT = {
    "table": "tasks", "record_id": "t-204", "reason": "remote version is newer",
    "resolved_at": "2026-12-03T09:31:07.412Z",
    "winner": {"id": "t-204", "title": "Count aisle 7", "status": "done", "qty": 14,
               "_ts_hlc": BIG, "_ts_origin": "store-017"},
    "loser": {"id": "t-204", "title": "Count aisle 7", "status": "open", "qty": 12,
              "_ts_hlc": BIG - 65536, "_ts_origin": "store-042"},
}


def conflict() -> StatusSnapshot:
    return replace(green(), conflicts_24h=1)


Setup = Callable[[MemoryStatusProvider], None]


def _set(snapshot: Callable[[], StatusSnapshot]) -> Setup:
    def setup(provider: MemoryStatusProvider) -> None:
        provider.set_snapshot(snapshot())
    return setup


def _parked(provider: MemoryStatusProvider) -> None:
    provider.set_snapshot(parked())
    for record in PARKED:
        provider.add_parked(record)


def _conflict(provider: MemoryStatusProvider) -> None:
    provider.add_conflict(CONFLICT)
    provider.set_snapshot(conflict())


# name -> (setup, a selector that is visible once the page shows the state)
STATES: dict[str, tuple[Setup, str]] = {
    "green": (_set(green), '#indicator[data-indicator="green"]'),
    "pushing": (_set(pushing), "#push-progress:not([hidden])"),
    "offline-retrying": (_set(offline_retrying), "#next-retry-line:not([hidden])"),
    "parked": (_parked, "#parked-body tr"),
    "conflict": (_conflict, "#conflicts-list .conflict"),
    "local-locked": (_set(local_locked), '#indicator[data-indicator="red"]'),
}
