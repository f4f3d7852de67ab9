"""Engine end to end: two systems' SQLite files, the real devserver, real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.model import Change
from tablesync.remote.rest import RestRemote

from reliability.stack import app_db, engine_for, pg, project_for, start_backend, wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    srv = start_backend(pg_dsn)
    yield srv
    srv.stop()


# the shared stack helpers (tests/reliability/stack.py), under this file's short names
_project, _engine, _app = project_for, engine_for, app_db


def _pg(info: DevServerInfo, query: str, *args: Any) -> list[tuple[Any, ...]]:
    return pg(info.dsn, query, *args)


def test_two_systems_end_to_end(backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    a, b = _engine(tmp_path, info, "system-a"), _engine(tmp_path, info, "system-b")
    arrived: list[Change] = []
    b.on("tasks", arrived.append)
    try:
        a.start()
        b.start()
        for e in (a, b):
            wait_for(lambda e=e: e.status.state == "connected" and e.status.realtime,
                     what="engines connected")
        snap = a.snapshot()
        assert (snap.state, snap.websocket, snap.engine_alive) == ("Connected", "connected", True)
        assert snap.indicator == "green" and snap.system_id == "system-a"
        app_a = _app(tmp_path, "system-a")
        # local insert/update/delete in A reach the server
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', 'system-a', 'one')")
        wait_for(lambda: _pg(info, "SELECT title FROM tasks WHERE id = 't1'") == [("one",)],
                 what="insert pushed")
        app_a.execute("UPDATE tasks SET title = 'uno' WHERE id = 't1'")
        wait_for(lambda: _pg(info, "SELECT title FROM tasks WHERE id = 't1'") == [("uno",)],
                 what="update pushed")
        app_a.execute("DELETE FROM tasks WHERE id = 't1'")
        wait_for(lambda: _pg(info, "SELECT _ts_deleted FROM tasks WHERE id = 't1'") ==
                 [(True,)], what="delete pushed as a tombstone")
        # a dashboard write for system B reaches B within a second, and not A
        t0 = time.monotonic()
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES ('tb', 'system-b', 'for b')")
        app_b = _app(tmp_path, "system-b")
        wait_for(lambda: app_b.execute("SELECT title FROM tasks WHERE id = 'tb'").fetchall(),
                 timeout=5, what="remote insert in B")
        assert time.monotonic() - t0 < 1.0
        wait_for(lambda: arrived, what="callback")
        assert arrived[0].table == "tasks" and arrived[0].record_id == "tb"
        # a later write for A arrives in A: had 'tb' been delivered to A, it would be there
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES ('ta', 'system-a', 'for a')")
        wait_for(lambda: app_a.execute("SELECT 1 FROM tasks WHERE id = 'ta'").fetchone(),
                 what="a later write for A delivered")
        assert app_a.execute("SELECT count(*) FROM tasks WHERE id = 'tb'").fetchone() == (0,)
        # nothing B applied was queued again (echo guard)
        assert app_b.execute("SELECT count(*) FROM sync_queue").fetchone() == (0,)
        # B edits its row; the server keeps B's version
        app_b.execute("UPDATE tasks SET status = 'done' WHERE id = 'tb'")
        wait_for(lambda: _pg(info, "SELECT status, _ts_origin FROM tasks WHERE id = 'tb'") ==
                 [("done", "system-b")], what="B's edit pushed")
        assert a.status.last_error == "" or "expired" not in a.status.last_error
    finally:
        a.close()
        b.close()


def test_offline_backend_then_back(backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    a = _engine(tmp_path, info, "system-a")
    try:
        a.start()
        wait_for(lambda: a.status.state == "connected", what="connected")
        backend.stop()
        app_a = _app(tmp_path, "system-a")
        for i in range(30):
            app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', ?)",
                          (f"off{i}", f"offline {i}"))
        wait_for(lambda: a.status.state == "disconnected", what="disconnected")
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES ('srv', 'system-a', 'x')")
        backend.start()
        a.sync_now()
        wait_for(lambda: _pg(info, "SELECT count(*) FROM tasks WHERE id LIKE 'off%'") ==
                 [(30,)], timeout=20, what="backlog drained after the backend came back")
        wait_for(lambda: app_a.execute("SELECT 1 FROM tasks WHERE id = 'srv'").fetchall(),
                 timeout=20, what="server write made while offline reached A")
        wait_for(lambda: a.store.stats().depth == 0, what="queue empty")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; engine status: {a.status}") from None
    finally:
        a.close()


def test_catch_up_after_downtime_and_sync_once(backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    for i in range(5):
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES (%s, 'system-b', 'early')",
            f"e{i}")
    b = _engine(tmp_path, info, "system-b")
    try:
        app_b = _app(tmp_path, "system-b")
        app_b.execute("INSERT INTO tasks (id, system_id, title) VALUES ('mine', 'system-b', 'x')")
        summary = b.sync_once()
        assert summary.pushed == 1 and summary.pulled >= 5
        assert app_b.execute("SELECT count(*) FROM tasks WHERE title = 'early'").fetchone() == (5,)
        assert b.store.stats().depth == 0
        assert _pg(info, "SELECT _ts_origin FROM tasks WHERE id = 'mine'") == [("system-b",)]
    finally:
        b.close()


def test_last_sync_is_set_by_an_idle_cycle(backend: DevServer, tmp_path: Path) -> None:
    """Nothing to push or pull: a completed cycle still counts as a successful sync."""
    a = _engine(tmp_path, backend.info, "system-a")
    try:
        assert a.snapshot().last_sync_at is None
        a.start()
        wait_for(lambda: a.store.stats().last_synced_at is not None, timeout=15,
                 what="last successful sync after connecting with nothing to do")
        assert a.store.stats().depth == 0
    finally:
        a.close()


def test_plain_server_deletes_reach_the_replica(backend: DevServer, tmp_path: Path) -> None:
    """A dashboard DELETE (SQL) and a REST DELETE become tombstones and sync like any write."""
    import httpx

    info = backend.info
    for i in range(3):
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES (%s, 'system-b', 'x')",
            f"d{i}")
    b = _engine(tmp_path, info, "system-b")
    try:
        app_b = _app(tmp_path, "system-b")
        assert b.sync_once().pulled == 3
        _pg(info, "DELETE FROM tasks WHERE id = 'd0'")
        resp = httpx.delete(f"{info.url}/rest/v1/tasks?id=eq.d1",
                            headers={"apikey": info.service_key,
                                     "Authorization": f"Bearer {info.service_key}"})
        assert resp.status_code in (200, 204), resp.text
        b.sync_once()
        assert app_b.execute("SELECT id FROM tasks ORDER BY id").fetchall() == [("d2",)]
        assert b.store.stats().depth == 0          # applied without echo
        assert _pg(info, "SELECT id, _ts_deleted FROM tasks ORDER BY id") == [
            ("d0", True), ("d1", True), ("d2", False)]
    finally:
        b.close()


def test_local_only_mode_queues_and_serves_status(tmp_path: Path) -> None:
    import httpx

    from tablesync.web.server import StatusServer

    project = _project(tmp_path, None, "system-a")
    with Engine(project) as e:
        assert e.snapshot().state == "Stopped"
        e.start()
        wait_for(lambda: e.status.state == "local_only", what="local-only")
        app = _app(tmp_path, "system-a")
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('q', 'system-a', 'x')")
        wait_for(lambda: e.store.stats().depth == 1, what="the write queued")
        assert e.status.state == "local_only"
        snap = wait_for(lambda: (s := e.snapshot()).queue_depth == 1 and s,
                        what="the cached snapshot refreshed")
        assert (snap.state, snap.queue_depth, snap.websocket) == ("LocalOnly", 1, "off")
        assert snap.oldest_queued_at is not None and snap.oldest_queued_at.endswith("Z")
        assert snap.oldest_queued_age_s is not None and 0 <= snap.oldest_queued_age_s < 60
        server = StatusServer(e)
        server.start()
        try:
            body = httpx.get(server.url + "/api/status", timeout=5,
                             headers=server.auth_headers()).json()
            assert body["state"] == "LocalOnly" and body["queue_depth"] == 1
            r = httpx.post(server.url + "/api/sync", timeout=5, headers=server.auth_headers())
            assert r.status_code == 202, r.text
        finally:
            server.stop()


def test_late_offline_upload_and_long_transaction_reach_a(backend: DevServer,
                                                          tmp_path: Path) -> None:
    """Issue 4 item 4: the catch-up cursor is a server xid watermark, never a timestamp."""
    info = backend.info
    a = _engine(tmp_path, info, "system-a", realtime=False)
    try:
        a.sync_once()
        # a long transaction starts (takes its xid) before A's next pull ...
        long_tx = psycopg.connect(info.dsn)
        long_tx.execute("INSERT INTO tasks (id, system_id, title) "
                        "VALUES ('long', 'system-a', 'slow commit')")
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES ('quick', 'system-a', 'q')")
        a.sync_once()
        app_a = _app(tmp_path, "system-a")
        assert app_a.execute("SELECT id FROM tasks").fetchall() == [("quick",)]
        # ... and commits after it; later writes have higher sequence numbers
        long_tx.commit()
        long_tx.close()
        _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES ('later', 'system-a', 'l')")
        # an edit made offline an hour ago (old HLC) is uploaded only now, by another writer
        hour_ago = (int(time.time() * 1000) - 3_600_000) << 16
        with RestRemote(info.url, info.service_key) as svc:  # service role, bypasses RLS
            out = svc.apply("tasks", [{
                "id": "offline", "system_id": "system-a", "project_id": None,
                "title": "made offline", "status": "pending", "priority": 0, "payload": None,
                "updated_at": None, "_ts_hlc": hour_ago, "_ts_origin": "system-b",
                "_ts_deleted": False, "_ts_base_hlc": 0, "_ts_base_origin": ""}])
            assert out[0].outcome == "applied"
        a.sync_once()
        got = {r[0] for r in app_a.execute("SELECT id FROM tasks")}
        assert got == {"quick", "long", "later", "offline"}
    finally:
        a.close()


@pytest.mark.slow
def test_tokens_expiring_every_few_seconds_lose_nothing(pg_dsn: str, tmp_path: Path) -> None:
    srv = start_backend(pg_dsn, ("system-a",), jwt_exp=3)
    try:
        info = srv.info
        a = _engine(tmp_path, info, "system-a")
        try:
            a.start()
            wait_for(lambda: a.status.state == "connected", what="connected")
            app_a = _app(tmp_path, "system-a")
            t_end = time.monotonic() + 8
            n = 0
            while time.monotonic() < t_end:
                app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 'x')",
                              (f"k{n}",))
                n += 1
                time.sleep(0.05)
                if n % 40 == 0:
                    _pg(info, "INSERT INTO tasks (id, system_id, title) VALUES (%s, 'system-a', 'r')",
                        f"r{n}")
            wait_for(lambda: _pg(info, "SELECT count(*) FROM tasks WHERE id LIKE 'k%'") == [(n,)],
                     timeout=15, what="every local write pushed")
            remote_ids = {r[0] for r in _pg(info, "SELECT id FROM tasks WHERE id LIKE 'r%'")}
            wait_for(lambda: {r[0] for r in app_a.execute(
                "SELECT id FROM tasks WHERE id LIKE 'r%'")} == remote_ids,
                timeout=15, what="every remote write pulled")
            assert not a.status.reauth_required and a.status.state in ("connected", "syncing")
        finally:
            a.close()
    finally:
        srv.stop()


@pytest.mark.slow
def test_errors_park_records_without_blocking_and_faults_are_retried(
        pg_dsn: str, tmp_path: Path) -> None:
    srv = start_backend(pg_dsn, ("system-a",), enable_faults=True)
    try:
        info = srv.info
        a = _engine(tmp_path, info, "system-a")
        app_a = _app(tmp_path, "system-a")
        app_a.execute("PRAGMA foreign_keys = OFF")
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('ok1', 'system-a', 'a')")
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('alien', 'system-b', 'b')")
        app_a.execute("INSERT INTO tasks (id, system_id, project_id, title) "
                      "VALUES ('orphan', 'system-a', 'no-such-project', 'c')")
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('ok2', 'system-a', 'd')")
        srv.faults.add("rest", 503, count=2, retry_after=0.2,
                       path_prefix="/rest/v1/rpc/tablesync_apply_")
        srv.faults.add("rest", 429, count=1, retry_after=0.3,
                       path_prefix="/rest/v1/rpc/tablesync_apply_")
        a.start()
        try:
            wait_for(lambda: {r[0] for r in _pg(info, "SELECT id FROM tasks")} == {"ok1", "ok2"},
                     timeout=20, what="good rows pushed despite faults and bad rows")
            wait_for(lambda: a.sync_now() or a.store.stats().parked == 2, timeout=20,
                     what="alien (forbidden) and orphan (FK error) parked")
            parked = {p["record_id"]: p["reason"] for p in a.store.parked()}
            assert set(parked) == {"alien", "orphan"}
            assert a.store.stats().depth == 0
            assert a.status.state in ("connected", "syncing")
            snap = wait_for(lambda: (s := a.snapshot()).parked == 2 and s,
                            what="the cached snapshot refreshed")
            assert snap.parked == 2 and snap.indicator == "red" and snap.queue_depth == 0
            assert a.metrics().changes_pushed.value >= 2 and a.metrics().sync_errors.value >= 3
        finally:
            a.close()
    finally:
        srv.stop()


def test_local_only_backlog_syncs_once_configured(backend: DevServer, tmp_path: Path) -> None:
    project = _project(tmp_path, None, "system-a")
    with Engine(project) as e:
        e.start()
        wait_for(lambda: e.status.state == "local_only", what="local-only")
        app = _app(tmp_path, "system-a")
        for i in range(250):
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 'x')",
                        (f"lo{i}",))
        app.execute("UPDATE tasks SET title = 'last' WHERE id = 'lo7'")
    a = _engine(tmp_path, backend.info, "system-a", batch_size=100)
    try:
        a.start()
        wait_for(lambda: _pg(backend.info, "SELECT count(*) FROM tasks") == [(250,)],
                 what="backlog drained once configured")
        assert _pg(backend.info, "SELECT title FROM tasks WHERE id = 'lo7'") == [("last",)]
        wait_for(lambda: a.store.stats().depth == 0, what="queue acknowledged")
    finally:
        a.close()


def test_concurrent_edit_converges_and_is_logged(backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    a = _engine(tmp_path, info, "system-a", realtime=False)
    try:
        app = _app(tmp_path, "system-a")
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('c', 'system-a', 'v0')")
        a.sync_once()
        app.execute("UPDATE tasks SET title = 'edited in A offline' WHERE id = 'c'")
        time.sleep(0.01)
        _pg(info, "UPDATE tasks SET title = 'edited on the dashboard' WHERE id = 'c'")
        a.sync_once()
        server = _pg(info, "SELECT title, _ts_origin FROM tasks WHERE id = 'c'")
        local = app.execute("SELECT title FROM tasks WHERE id = 'c'").fetchall()
        assert server == [("edited on the dashboard", "server")]
        assert local == [("edited on the dashboard",)]
        conflicts = a.store.conflicts()
        assert len(conflicts) == 1 and conflicts[0]["record_id"] == "c"
        log_lines = (tmp_path / "system-a-conflicts.log").read_text().splitlines()
        assert len(log_lines) == 1 and '"record_id": "c"' in log_lines[0]
        snap = a.snapshot()
        assert (snap.state, snap.conflicts_24h, snap.queue_depth) == ("Stopped", 1, 0)
    finally:
        a.close()


def test_unexpected_error_in_a_cycle_does_not_wedge_the_engine(backend: DevServer,
                                                               tmp_path: Path) -> None:
    info = backend.info
    a = _engine(tmp_path, info, "system-a")
    real_apply = a.remote.apply  # type: ignore[union-attr]
    calls = {"n": 0}

    def flaky(table: str, rows: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug, not a network error")
        return real_apply(table, rows)

    a.remote.apply = flaky  # type: ignore[union-attr, method-assign]
    try:
        app = _app(tmp_path, "system-a")
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('w', 'system-a', 'x')")
        a.start()
        wait_for(lambda: _pg(info, "SELECT 1 FROM tasks WHERE id = 'w'"), timeout=15,
                 what="pushed after the crash was retried")
        assert calls["n"] >= 2 and "RuntimeError" in (a.status.last_error or "RuntimeError")
    finally:
        a.close()


def test_drain_in_chunks_and_no_back_to_back_retries(backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    a = _engine(tmp_path, info, "system-a", batch_size=4, realtime=False)
    assert a.cycles is not None
    a.cycles.chunk = 7                            # several queue scans for one drain
    try:
        app = _app(tmp_path, "system-a")
        app.execute("PRAGMA foreign_keys = OFF")
        app.execute("INSERT INTO tasks (id, system_id, project_id, title) "
                    "VALUES ('orphan', 'system-a', 'missing', 'x')")
        for i in range(30):
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 'x')",
                        (f"n{i:02d}",))
        summary = a.sync_once()
        assert summary.pushed == 31
        assert _pg(info, "SELECT count(*) FROM tasks") == [(30,)]
        tries = app.execute("SELECT retry_count FROM sync_queue WHERE record_id = 'orphan'")
        assert tries.fetchall() == [(1,)]          # one error per drain, not five in a row
        assert a.store.stats().parked == 0 and a.store.stats().depth == 1
    finally:
        a.close()


def test_a_task_reassigned_on_the_server_moves_between_systems(backend: DevServer,
                                                               tmp_path: Path) -> None:
    """A dashboard re-scopes A's task to B: it leaves A's SQLite (Realtime, and catch-up
    for an engine that was stopped meanwhile) and arrives in B's; moved back, it returns."""
    info = backend.info
    a, b = _engine(tmp_path, info, "system-a"), _engine(tmp_path, info, "system-b")
    left: list[Change] = []
    a.on("tasks", left.append)
    app_a, app_b = _app(tmp_path, "system-a"), _app(tmp_path, "system-b")
    have = "SELECT title FROM tasks WHERE id = ?"
    try:
        for e in (a, b):
            e.start()
        for e in (a, b):
            wait_for(lambda e=e: e.status.state == "connected" and e.status.realtime,
                     what="engines connected")
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('mv', 'system-a', 'job')")
        app_a.execute("INSERT INTO tasks (id, system_id, title) VALUES ('stay', 'system-a', 's')")
        wait_for(lambda: _pg(info, "SELECT count(*) FROM tasks") == [(2,)], what="pushed")
        _pg(info, "UPDATE tasks SET system_id = 'system-b' WHERE id = 'mv'")
        wait_for(lambda: app_b.execute(have, ("mv",)).fetchall() == [("job",)], what="in B")
        wait_for(lambda: app_a.execute(have, ("mv",)).fetchall() == [], what="gone from A")
        assert app_a.execute(have, ("stay",)).fetchall() == [("s",)]
        assert any(c.record_id == "mv" and c.op.value == "DELETE" for c in left)
        assert app_a.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL"
                             ).fetchone() == (0,)           # removed without a queued delete
        assert _pg(info, "SELECT system_id, _ts_deleted FROM tasks WHERE id = 'mv'") == [
            ("system-b", False)]
        # moved back while A is stopped: A's next catch-up brings it back
        a.close()
        _pg(info, "UPDATE tasks SET system_id = 'system-a', title = 'back' WHERE id = 'mv'")
        wait_for(lambda: app_b.execute(have, ("mv",)).fetchall() == [], what="gone from B")
        a = _engine(tmp_path, info, "system-a")
        a.sync_once()
        assert app_a.execute(have, ("mv",)).fetchall() == [("back",)]
        # moved away again while A is stopped: the catch-up reads the exit
        a.close()
        _pg(info, "UPDATE tasks SET system_id = 'system-b' WHERE id = 'mv'")
        a = _engine(tmp_path, info, "system-a")
        a.sync_once()
        assert app_a.execute(have, ("mv",)).fetchall() == []
        assert app_a.execute(have, ("stay",)).fetchall() == [("s",)]
    finally:
        a.close()
        b.close()
