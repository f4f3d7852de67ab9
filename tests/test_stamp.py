"""tablesync.stamp: the store's HLC stamping equals stamping at write time, whatever the timing.

The capture triggers only record the wall time; the store computes the versions later.
These tests prove the two designs give identical versions: the set-based SQL equals the
reference recurrence (chunk boundaries included), and a real store that stamps lazily
(at random moments, with remote applies raising the observed clock in between) produces
exactly what an eager per-write HLC would have stamped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync import clock
from tablesync.migrations import migrate
from tablesync.project import Project, load_project
from tablesync.sql.sqlite import QUEUE_EXTRA_COLUMNS, SEED_SYNC_QUEUE_SQL
from tablesync.stamp import chain, stamp_pending
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
BASE_MS = 1_790_000_000_000  # 2026-09


def _wall_jd(ms: int) -> float:
    # a quarter millisecond in, so the float round trip gives back exactly ``ms``
    return (ms + 0.25) / 86_400_000 + 2440587.5


def _queue_db(project: Project) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, project)
    return conn


@settings(max_examples=150, deadline=None)
@given(walls=st.lists(st.integers(BASE_MS - 5_000, BASE_MS + 5_000), min_size=1, max_size=60),
       h0_ms=st.integers(BASE_MS - 10_000, BASE_MS + 10_000),
       chunk=st.integers(1, 70), split=st.integers(0, 60))
def test_sql_stamping_equals_the_reference_recurrence(walls: list[int], h0_ms: int, chunk: int,
                                                      split: int) -> None:
    conn = _queue_db(load_project(ROOT / "sync.toml"))
    h0 = clock.pack(h0_ms) + 7
    conn.execute("UPDATE _tablesync_state SET hlc = ?", (h0,))
    split = min(split, len(walls))
    stamped: list[int] = []
    for part in (walls[:split], walls[split:]):     # two stamping rounds
        conn.executemany("INSERT INTO sync_queue (operation, table_name, record_id, created_at)"
                         " VALUES ('INSERT', 'projects', 'r', ?)", [(_wall_jd(w),) for w in part])
        conn.execute("BEGIN IMMEDIATE")
        assert stamp_pending(conn, chunk=chunk) == len(part)
        conn.execute("COMMIT")
    stamped = [h for (h,) in conn.execute("SELECT hlc FROM sync_queue ORDER BY id")]
    assert stamped == chain(h0, walls)
    texts = [t for (t,) in conn.execute("SELECT created_at FROM sync_queue ORDER BY id")]
    assert all(isinstance(t, str) and len(t) == 23 for t in texts)   # YYYY-MM-DD HH:MM:SS.SSS


def test_reference_recurrence_is_monotonic_and_above_h0() -> None:
    assert chain(100, [0, 0]) == [101, 102]
    assert chain(0, [5, 3, 9]) == [5 << 16, (5 << 16) + 1, 9 << 16]


# -- lazy stamping in a real store equals eager stamping at write time ------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(-3_000, 3_000)),      # wall skew of the write, ms
    st.tuples(st.just("apply"), st.integers(-2_000, 4_000)),      # remote version, ms offset
    st.tuples(st.just("stamp"), st.just(0)),
), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_lazy_stamping_in_the_store_equals_eager_hlc(ops: list[tuple[str, int]],
                                                     tmp_path_factory: Any) -> None:
    tmp = tmp_path_factory.mktemp("stamp")
    project = load_project(ROOT / "sync.toml")
    store = LocalStore.open(project, tmp / "app.db", conflict_log=tmp / "c.log")
    app = sqlite3.connect(tmp / "app.db", isolation_level=None)
    wall = {"ms": BASE_MS}
    app.create_function("julianday", 1, lambda arg: _wall_jd(wall["ms"]))
    observed, prev, expected = 0, 0, []
    try:
        for n, (op, arg) in enumerate(ops):
            wall["ms"] = BASE_MS + n * 10 + arg
            if op == "write":
                app.execute("INSERT INTO projects (id, system_id, name) VALUES (?, 's', 'n')",
                            (f"w{n}",))
                prev = max(wall["ms"] << 16, max(observed, prev) + 1)   # the eager HLC
                expected.append(prev)
            elif op == "apply":
                hlc = clock.pack(BASE_MS + n * 10 + arg)
                store.apply_remote("projects", [{
                    "id": f"r{n}", "system_id": "s", "name": "remote", "description": None,
                    "created_at": None, "_ts_hlc": hlc, "_ts_origin": "other",
                    "_ts_deleted": False, "_ts_base_hlc": 0, "_ts_base_origin": "",
                    "_ts_seq": n, "_ts_xid": n}])
                observed = max(observed, hlc)
            else:
                store.stamp()
        store.stamp()
        got = [h for (h,) in app.execute("SELECT hlc FROM sync_queue ORDER BY id")]
        assert got == expected
    finally:
        app.close()
        store.close()


def test_migrating_a_queue_stamped_by_the_old_triggers(tmp_path: Path) -> None:
    """Entries stamped by earlier triggers keep their versions; new ones order after them."""
    project = load_project(ROOT / "sync.toml")
    db = tmp_path / "old.db"
    old = sqlite3.connect(db, isolation_level=None)
    old.execute(SEED_SYNC_QUEUE_SQL)
    for col, decl in QUEUE_EXTRA_COLUMNS.items():     # as the earlier tablesync left it
        old.execute(f"ALTER TABLE sync_queue ADD COLUMN {col} {decl}")
    future = clock.pack(clock.SystemClock().now_ms() + 3_600_000)   # a skewed old machine
    old.execute("INSERT INTO sync_queue (operation, table_name, record_id, hlc) VALUES "
                "('INSERT', 'projects', 'old', ?)", (future,))
    old.close()
    store = LocalStore.open(project, db, conflict_log=tmp_path / "c.log")
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("INSERT INTO projects (id, system_id, name) VALUES ('new', 'system-a', 'n')")
    store.stamp()
    rows = app.execute("SELECT record_id, hlc FROM sync_queue ORDER BY id").fetchall()
    assert rows == [("old", future), ("new", future + 1)]
    app.close()
    store.close()
