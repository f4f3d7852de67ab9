"""Issue 13 items 3-5 on the real stack (devserver + PostgreSQL): one bad row never stops
anything, catch-up pages are bounded by bytes, versions are bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from tablesync.devserver.server import DevServer

from .stack import app_db, create_schema, create_users, engine_for, pg

pytestmark = pytest.mark.postgres

A, B = "system-a", "system-b"


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    create_users(srv.info, (A, B))
    yield srv
    srv.stop()


def _replica(tmp: Path, backend: DevServer, system: str) -> sqlite3.Connection:
    engine_for(tmp, backend.info, system).close()
    return app_db(tmp, system)


def _parked(app: sqlite3.Connection) -> dict[str, str]:
    return dict(app.execute("SELECT record_id, reason FROM _tablesync_parked"))


# ------------------------------------------------------------------ item 3: push side


def test_rows_that_cannot_be_encoded_are_parked_alone_and_the_rest_is_pushed(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, backend, A)
    ins = "INSERT INTO tasks (id, system_id, title, priority) VALUES (?, ?, ?, ?)"
    app.execute(ins, ("before", A, "ok", 1))
    app.execute("INSERT INTO tasks (id, system_id, title, priority) "
                "VALUES ('inf', ?, 'x', 9e999)", (A,))
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('blob', ?, X'00ff')", (A,))
    app.execute("INSERT INTO tasks (id, system_id, title) "
                "VALUES ('utf8', ?, CAST(X'61ff62' AS TEXT))", (A,))
    app.execute(ins, ("after", A, "ok", 2))
    with engine_for(tmp_path, info, A) as e:
        summary = e.sync_once()
        assert summary.parked == 3
    assert sorted(r for (r,) in pg(info.dsn, "SELECT id FROM tasks")) == ["after", "before"]
    parked = _parked(app)
    assert sorted(parked) == ["blob", "inf", "utf8"]
    assert "priority" in parked["inf"] and "Infinity" in parked["inf"]
    assert "title" in parked["blob"] and "BLOB" in parked["blob"]
    assert "title" in parked["utf8"] and "UTF-8" in parked["utf8"]
    # nothing else is stuck: a later write is pushed by the next cycle
    app.execute(ins, ("later", A, "ok", 3))
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()
    assert pg(info.dsn, "SELECT id FROM tasks WHERE id = 'later'") == [("later",)]


def test_the_running_engine_names_the_bad_row_not_server_unreachable(
        backend: DevServer, tmp_path: Path) -> None:
    from .stack import wait_for
    info = backend.info
    app = _replica(tmp_path, backend, A)
    e = engine_for(tmp_path, info, A)
    e.start()
    try:
        wait_for(lambda: e.status.state == "connected", what="connected")
        app.execute("INSERT INTO tasks (id, system_id, title, priority) "
                    "VALUES ('inf', ?, 'x', 9e999)", (A,))
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('good', ?, 'g')", (A,))
        wait_for(lambda: pg(info.dsn, "SELECT 1 FROM tasks WHERE id = 'good'"),
                 what="the good row pushed")
        assert "inf" in _parked(app)
        snap = e.snapshot()
        assert snap.parked == 1
        wait_for(lambda: e.status.state == "connected", what="connected again")
        assert "unreachable" not in e.status.last_error
    finally:
        e.close()


# ------------------------------------------------------------------ item 3: pull side


def test_a_server_row_the_local_database_refuses_is_recorded_and_retried(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, backend, A)
    app.execute("CREATE TRIGGER app_refuses BEFORE INSERT ON tasks WHEN NEW.title = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'the app refuses poison'); END")
    for rid, title in (("ok1", "fine"), ("bad", "poison"), ("ok2", "fine")):
        pg(info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, %s)",
           rid, A, title)
    with engine_for(tmp_path, info, A) as e:
        summary = e.sync_once()                               # no traceback, no stall
        assert summary.applied == 2
        (refused,) = e.store.refused()
        assert (refused["table"], refused["record_id"]) == ("tasks", "bad")
        assert "the app refuses poison" in refused["reason"]
        assert "bad" in e.status.last_error
    assert sorted(r for (r,) in app.execute("SELECT id FROM tasks")) == ["ok1", "ok2"]
    # the cursor moved on, the row was not skipped silently: it is retried by later
    # catch-ups and applies once the local database takes it
    app.execute("DROP TRIGGER app_refuses")
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()
        assert e.store.refused() == []
    assert app.execute("SELECT title FROM tasks WHERE id = 'bad'").fetchall() == [("poison",)]


# ------------------------------------------------------------------ item 4: bytes


def test_catch_up_pages_are_bounded_by_bytes_and_an_oversized_row_is_reported(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, backend, A)
    big = "x" * 20_000
    for i in range(7):
        pg(info.dsn, "INSERT INTO tasks (id, system_id, title, payload) VALUES "
           "(%s, %s, 't', %s)", f"big{i}", A, big)
    pg(info.dsn, "INSERT INTO tasks (id, system_id, title, payload) VALUES "
       "('huge', %s, 't', %s)", A, "y" * 80_000)
    pg(info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('last', %s, 't')", A)
    with engine_for(tmp_path, info, A) as e:
        e.remote.max_response = 50_000                        # type: ignore[union-attr]
        summary = e.sync_once()
        assert summary.applied == 8
        (refused,) = e.store.refused()
        assert refused["record_id"] == "huge" and "50000-byte" in refused["reason"]
    got = sorted(r for (r,) in app.execute("SELECT id FROM tasks"))
    assert got == sorted([f"big{i}" for i in range(7)] + ["last"])


# ------------------------------------------------------------------ item 5: bounded versions

HOUR_AHEAD_MS = 3_600_000
MAX = (1 << 63) - 1


def _now_hlc() -> int:
    import time
    return (time.time_ns() // 1_000_000) << 16


def test_a_version_ahead_of_the_server_clock_is_restamped_and_the_skew_shown(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, backend, A)
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'x')", (A,))
    with engine_for(tmp_path, info, A) as e:
        e.store.stamp()
        ahead = _now_hlc() + (HOUR_AHEAD_MS << 16)            # this machine: 1 h ahead
        app.execute("UPDATE sync_queue SET hlc = ?", (ahead,))
        e.sync_once()
        assert "ahead of the server" in e.status.last_error
    ((hlc, origin),) = pg(info.dsn, "SELECT _ts_hlc, _ts_origin FROM tasks WHERE id = 't1'")
    assert origin == A and hlc < _now_hlc() + (60_000 << 16)   # the server's clock
    assert app.execute("SELECT count(*) FROM _tablesync_parked").fetchone() == (0,)


def test_the_apply_function_refuses_unbounded_versions_and_foreign_origins(
        backend: DevServer, tmp_path: Path) -> None:
    from tablesync.remote.rest import RestRemote
    from tablesync.session import Session
    from tablesync.vault import Secret, Vault
    from .stack import email, password
    info = backend.info
    remote = RestRemote(info.url, info.anon_key)
    session = Session(remote, Vault(tmp_path / "v.json"), project=info.url,
                      email=email(A), password=Secret(password(A)))
    remote.tokens = session
    session.ensure()
    row = {"id": "m", "system_id": A, "title": "t", "_ts_deleted": False,
           "_ts_base_hlc": 0, "_ts_base_origin": ""}
    with remote:
        out = remote.apply("tasks", [{**row, "_ts_hlc": MAX, "_ts_origin": A},
                                     {**row, "id": "f", "_ts_hlc": _now_hlc(),
                                      "_ts_origin": B},
                                     {**row, "id": "ok", "_ts_hlc": _now_hlc(),
                                      "_ts_origin": A}])
    assert [o.outcome.value for o in out] == ["error", "forbidden", "applied"]
    assert "clock skew" in (out[0].message or "") and "server_hlc=" in (out[0].message or "")
    assert B in (out[1].message or "")
    # a row that holds the largest version anyway (an old server): edits do not overflow
    pg(info.dsn, "INSERT INTO tasks (id, system_id, title, _ts_hlc, _ts_origin) VALUES "
       "('top', %s, 't', %s, 'x')", A, MAX)
    pg(info.dsn, "UPDATE tasks SET title = 'edited' WHERE id = 'top'")
    assert pg(info.dsn, "SELECT _ts_hlc FROM tasks WHERE id = 'top'") == [(MAX,)]


def test_a_replica_never_adopts_a_version_beyond_the_bound_and_reset_recovers_its_clock(
        backend: DevServer, tmp_path: Path) -> None:
    info = backend.info
    app = _replica(tmp_path, backend, A)
    pg(info.dsn, "INSERT INTO tasks (id, system_id, title, _ts_hlc, _ts_origin) VALUES "
       "('far', %s, 'future', %s, 'server')", A, MAX)
    pg(info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('near', %s, 'now')", A)
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()
        (refused,) = e.store.refused()
        assert refused["record_id"] == "far" and "ahead" in refused["reason"]
        assert e.store.clock < _now_hlc() + (HOUR_AHEAD_MS << 16)
    assert [r for (r,) in app.execute("SELECT id FROM tasks")] == ["near"]
    # a replica whose clock already holds 2^63 - 1 (adopted before the bound existed)
    app.execute("UPDATE _tablesync_state SET hlc = ?", (MAX,))
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('w1', ?, 'x')", (A,))
    with engine_for(tmp_path, info, A) as e:
        e.sync_once()                                         # no OverflowError
        assert pg(info.dsn, "SELECT id FROM tasks WHERE id = 'w1'") == [("w1",)]
        e.store.reset()
        assert e.store.clock < _now_hlc() + (HOUR_AHEAD_MS << 16)
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('w2', ?, 'x')", (A,))
        e.sync_once()
    ((hlc,),) = pg(info.dsn, "SELECT _ts_hlc FROM tasks WHERE id = 'w2'")
    assert hlc < _now_hlc() + (360_000 << 16)     # reset: at most now + max_clock_skew
