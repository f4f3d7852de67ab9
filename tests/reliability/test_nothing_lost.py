"""Issue 11: local writes are never lost, on the real stack (devserver + PostgreSQL).

Each test is one of the hand-reproducible causes an outside randomized run found:

A. a local edit to a record the server re-assigns to another system (three variants: the
   exit pulled by the same ``sync now`` that got ``forbidden``; the exit arriving over
   Realtime while REST fails, then the cached push answered ``forbidden``; the record
   moved back before the exit was seen);
B. a dashboard DELETE on a ``last-write-wins`` table must get a version of its own;
C. a never-pushed child's tombstone must not be sent before its never-pushed parent;

plus the recovery bound (pushing resumes within 5 s of the backend answering again) and
the refusal of a second replica with the same system id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.errors import DuplicateReplicaError
from tablesync.model import EXITS_TABLE

from .stack import app_db, create_schema, create_users, engine_for, pg, wait_for

pytestmark = pytest.mark.postgres

A, C = "system-a", "system-c"


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn, enable_faults=True)
    srv.start()
    create_users(srv.info, (A, C))
    yield srv
    srv.stop()


@pytest.fixture
def dashboard(backend: DevServer) -> Iterator[httpx.Client]:
    """The Supabase dashboard / an admin script: REST with the service-role key."""
    info = backend.info
    with httpx.Client(base_url=info.url, timeout=10, headers={
            "apikey": info.service_key, "Authorization": f"Bearer {info.service_key}",
            "Content-Type": "application/json", "Prefer": "return=minimal"}) as http:
        yield http


def _ok(resp: httpx.Response) -> None:
    assert resp.status_code in (201, 204), resp.text


def _conflicts(app: sqlite3.Connection, rid: str) -> list[dict[str, Any]]:
    return [{"reason": why, "loser": json.loads(lo), "winner": json.loads(w)}
            for why, lo, w in app.execute(
                "SELECT reason, loser, winner FROM _tablesync_conflicts WHERE record_id = ?",
                (rid,))]


def _unsettled(app: sqlite3.Connection) -> tuple[int, int]:
    """(pending queue entries, parked records)."""
    (pending,) = app.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL"
                             ).fetchone()
    (parked,) = app.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
    return pending, parked


def _replica(tmp: Path, info: DevServerInfo, system: str) -> sqlite3.Connection:
    """``system``'s database (created by opening an engine once) and its app's connection."""
    engine_for(tmp, info, system).close()
    return app_db(tmp, system)


def _push_task(tmp: Path, info: DevServerInfo, system: str, rid: str) -> None:
    """``system``'s app inserts a task and a ``sync now`` pushes it."""
    app = _replica(tmp, info, system)
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'first')",
                (rid, system))
    with engine_for(tmp, info, system) as e:
        e.sync_once()
    assert pg(info.dsn, "SELECT system_id FROM tasks WHERE id = %s", rid) == [(system,)]


def _assert_edit_kept_in_conflict_log(tmp: Path, system: str, rid: str, title: str) -> None:
    app = app_db(tmp, system)
    found = [c for c in _conflicts(app, rid) if c["loser"]["data"].get("title") == title]
    assert found, f"{title!r} is in no conflict entry: {_conflicts(app, rid)}"
    log = (tmp / f"{system}-conflicts.log").read_text().splitlines()
    assert any(json.loads(line)["loser"]["data"].get("title") == title for line in log)


# ------------------------------------------------------------------------------------ A


def test_a_edit_of_a_record_moved_away_is_logged_unparked_and_closed(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    _push_task(tmp_path, info, C, "t1")                       # C's engine is then killed
    _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": A}))
    app = app_db(tmp_path, C)
    app.execute("UPDATE tasks SET title = 'edited by C' WHERE id = 't1'")
    with engine_for(tmp_path, info, C) as e:                  # restarts, pushes first
        summary = e.sync_once()
        assert summary.parked <= 1                           # forbidden, then the exit
    assert app.execute("SELECT id FROM tasks").fetchall() == []
    assert _unsettled(app) == (0, 0), "nothing pending, nothing parked for good"
    _assert_edit_kept_in_conflict_log(tmp_path, C, "t1", "edited by C")
    (conflict,) = _conflicts(app, "t1")
    assert "left this system's scope" in conflict["reason"]
    assert conflict["loser"]["data"]["system_id"] == C       # the whole row image
    assert pg(info.dsn, "SELECT system_id, title FROM tasks WHERE id = 't1'") == [(A, "first")]


def test_a_exit_over_realtime_while_rest_fails_then_cached_push_is_not_parked(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    _push_task(tmp_path, info, C, "t1")
    app = app_db(tmp_path, C)
    app.execute("UPDATE tasks SET title = 'edited by C' WHERE id = 't1'")
    backend.faults.add("rest", 503, count=None,       # pushes fail
                        path_prefix="/rest/v1/rpc/tablesync_apply_")
    e = engine_for(tmp_path, info, C, max_retries=100, probe_interval=0)
    e.start()
    try:
        # the push read the change into its backlog and failed; Realtime is live
        # the exit log's channel is a hint channel, not part of "live": wait for it too
        wait_for(lambda: "503" in e.status.last_error and e.status.realtime
                 and EXITS_TABLE in e._live,
                 timeout=20, what=f"a failed push with Realtime live ({e.status})")
        _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": A}))
        wait_for(lambda: not app.execute("SELECT 1 FROM tasks WHERE id = 't1'").fetchone(),
                 timeout=20, what="the exit applied over Realtime")
        assert _conflicts(app, "t1")                          # logged by the exit
        backend.faults.clear()
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('canary', ?, 'c')",
                    (C,))
        e.sync_now()
        # the cached batch goes out before the canary: once the canary is on the server,
        # the stale push of t1 was answered (forbidden)
        wait_for(lambda: pg(info.dsn, "SELECT 1 FROM tasks WHERE id = 'canary'"),
                 timeout=20, what="the canary pushed")
        wait_for(lambda: _unsettled(app)[0] == 0, what="the queue drained")
        assert app.execute("SELECT record_id, reason FROM _tablesync_parked").fetchall() == []
    finally:
        e.close()
    _assert_edit_kept_in_conflict_log(tmp_path, C, "t1", "edited by C")


def test_a_record_moved_back_before_the_exit_was_seen_keeps_the_parked_write(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    _push_task(tmp_path, info, C, "t1")
    _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": A}))
    app = app_db(tmp_path, C)
    time.sleep(0.005)                                         # C's edit is after the move
    app.execute("UPDATE tasks SET title = 'edited by C' WHERE id = 't1'")
    with engine_for(tmp_path, info, C) as e:                  # a push only, then killed
        e.session.ensure()  # type: ignore[union-attr]
        e._cycles().push_batch(None)
    assert app.execute("SELECT count(*) FROM _tablesync_parked").fetchone() == (1,)
    time.sleep(0.005)
    _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": C,
                                                         "title": "moved back"}))
    with engine_for(tmp_path, info, C) as e:
        e.sync_once()
    # the move back is later than C's edit and had not seen it: the server's row wins,
    # C's edit is in the conflict log, nothing stays pending or parked
    assert app.execute("SELECT title FROM tasks WHERE id = 't1'").fetchall() == [
        ("moved back",)]
    assert _unsettled(app) == (0, 0)
    _assert_edit_kept_in_conflict_log(tmp_path, C, "t1", "edited by C")


def test_a_parked_write_newer_than_the_return_is_pushed_after_the_record_comes_back(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    _push_task(tmp_path, info, C, "t1")
    _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": A}))
    _ok(dashboard.patch("/rest/v1/tasks?id=eq.t1", json={"system_id": C}))  # and back
    time.sleep(0.005)
    app = app_db(tmp_path, C)
    app.execute("UPDATE tasks SET title = 'edited by C' WHERE id = 't1'")
    # parked as if refused while the record was away (C could not see it then)
    with engine_for(tmp_path, info, C) as e:
        e.store.park("tasks", "t1", "the record exists but is not visible to this system")
        e.sync_once()                     # the catch-up shows the record: it is ours again
        e.sync_once()                     # ... so the parked write is pushed
    assert _unsettled(app) == (0, 0)
    assert pg(info.dsn, "SELECT title FROM tasks WHERE id = 't1'") == [("edited by C",)]


# ------------------------------------------------------------------------------------ B


def _push_result(tmp: Path, info: DevServerInfo) -> sqlite3.Connection:
    app = _replica(tmp, info, A)
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'task')", (A,))
    app.execute("INSERT INTO results (id, system_id, task_id, output) VALUES "
                "('r1', ?, 't1', 'first')", (A,))
    with engine_for(tmp, info, A) as e:
        e.sync_once()
    return app


def test_b_dashboard_delete_on_last_write_wins_is_restamped_and_beats_an_older_edit(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    app = _push_result(tmp_path, info)
    (before,) = pg(info.dsn, "SELECT _ts_hlc FROM results WHERE id = 'r1'")
    app.execute("UPDATE results SET output = 'offline edit' WHERE id = 'r1'")   # offline
    time.sleep(0.005)
    _ok(dashboard.delete("/rest/v1/results?id=eq.r1"))       # a later dashboard delete
    ((hlc, origin, deleted, base),) = pg(
        info.dsn, "SELECT _ts_hlc, _ts_origin, _ts_deleted, _ts_base_hlc FROM results "
        "WHERE id = 'r1'")
    assert deleted and origin == "server" and hlc > before[0] and base == before[0]
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()
    # the later delete wins; the overwritten offline edit is in the conflict log
    assert pg(info.dsn, "SELECT _ts_deleted, output FROM results WHERE id = 'r1'") == [
        (True, "first")]
    assert app.execute("SELECT id FROM results").fetchall() == []
    assert _unsettled(app) == (0, 0)
    assert [c["loser"]["data"]["output"] for c in _conflicts(app, "r1")] == ["offline edit"]


def test_b_dashboard_delete_on_edit_wins_is_undone_by_a_concurrent_edit(
        backend: DevServer, dashboard: httpx.Client, tmp_path: Path) -> None:
    info = backend.info
    app = _push_result(tmp_path, info)
    app.execute("UPDATE tasks SET title = 'offline edit' WHERE id = 't1'")   # offline
    time.sleep(0.005)
    _ok(dashboard.delete("/rest/v1/tasks?id=eq.t1"))
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()
    # edit-wins: the concurrent edit restores the row; the delete it undid is logged
    assert pg(info.dsn, "SELECT _ts_deleted, title FROM tasks WHERE id = 't1'") == [
        (False, "offline edit")]
    assert app.execute("SELECT title FROM tasks").fetchall() == [("offline edit",)]
    assert pg(info.dsn, "SELECT (loser ->> '_ts_deleted')::boolean FROM tablesync_conflicts "
              "WHERE record_id = 't1'") == [(True,)]


# ------------------------------------------------------------------------------------ C


def test_c_tombstone_of_a_never_pushed_child_follows_its_never_pushed_parent(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, info, A)
    app.execute("INSERT INTO projects (id, system_id, name) VALUES ('p1', ?, 'P')", (A,))
    app.execute("INSERT INTO tasks (id, system_id, project_id, title) VALUES "
                "('t1', ?, 'p1', 'short-lived')", (A,))
    app.execute("DELETE FROM tasks WHERE id = 't1'")
    with engine_for(tmp_path, info, A) as e:
        summary = e.sync_once()                               # one cycle, no error
    assert summary.errors == []
    assert app.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL OR "
                       "retry_count > 0 OR last_error IS NOT NULL").fetchone() == (0,)
    assert pg(info.dsn, "SELECT id, _ts_deleted FROM tasks") == [("t1", True)]


# ------------------------------------------------------------------------------ recovery


def test_pushing_resumes_within_5_s_of_the_backend_returning(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    # max_retries=2: offline mode (60 s between tries) after ~3 s of outage
    app = _replica(tmp_path, info, A)
    e: Engine = engine_for(tmp_path, info, A, max_retries=2)
    e.start()
    try:
        wait_for(lambda: e.status.state == "connected" and e.status.realtime,
                 what="connected")
        backend.stop(keep_postgres=True)                      # a real outage
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('during', ?, 'x')",
                    (A,))
        wait_for(lambda: e.status.offline, timeout=30, what="offline mode")
        time.sleep(2.0)                                       # well into the 60 s wait
        backend.start()
        back = time.monotonic()
        wait_for(lambda: pg(info.dsn, "SELECT 1 FROM tasks WHERE id = 'during'"),
                 timeout=30, what="the queued write pushed")
        took = time.monotonic() - back
    finally:
        e.close()
    assert took <= 5.0, f"pushing resumed {took:.1f} s after the backend returned"


# ------------------------------------------------------------------ one replica per system


def test_a_second_replica_with_the_same_system_id_is_refused_until_the_first_stops(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = engine_for(one, info, A)
    first.start()
    second = engine_for(two, info, A)
    try:
        wait_for(lambda: first.status.state == "connected", what="the first replica syncing")
        with pytest.raises(DuplicateReplicaError, match="held by another replica"):
            second.sync_once()                                # `tablesync sync now`
        second.start()                                        # `tablesync run`
        wait_for(lambda: second.status.state == "failed", what="the second refused")
        assert "held by another replica" in second.status.reason
        assert not second.status.reauth_required
        # the same database again (a restart after a crash) is the same replica: accepted
        with engine_for(one, info, A) as again:
            again.sync_once()
        first.close()                                         # a clean stop releases it
        second.sync_now()
        wait_for(lambda: second.status.state == "connected", what="the second syncing")
    finally:
        first.close()
        second.close()
