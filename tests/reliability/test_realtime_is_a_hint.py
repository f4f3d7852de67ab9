"""Realtime is a hint (issue 14 item 2): a change Realtime never delivers still arrives
within one ``poll_interval`` while the channel stays live, and a second "Subscribed to
PostgreSQL" on a live channel starts a catch-up."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tablesync.devserver.server import DevServer
from tablesync.engine import Engine

from .stack import app_db, create_schema, create_users, engine_for, wait_for

pytestmark = pytest.mark.postgres
A = "system-a"


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    create_users(srv.info, (A,))
    yield srv
    srv.stop()


def _insert_unseen_by_realtime(dsn: str, rid: str) -> None:
    """A server write Realtime does not deliver (as when it drops a change above the
    project's rate limit): with ``session_replication_role = replica`` no ordinary trigger
    fires, so the devserver's change capture never sees it; the sync columns are set by
    hand exactly as the stamp trigger would set them."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO tasks (id, system_id, title, _ts_hlc, _ts_origin, _ts_seq, _ts_xid) "
            "VALUES (%s, %s, 'missed by realtime', "
            "(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16, 'server', "
            "nextval('public.tablesync_change_seq'), pg_current_xact_id()::text::bigint)",
            (rid, A))


@contextmanager
def _live_engine(backend: DevServer, tmp_path: Path, poll_interval: float, **sync: object
                 ) -> Iterator[tuple[Engine, sqlite3.Connection]]:
    """A running engine of system A with Realtime live, and its app's connection; a row
    'missed' is then written on the server without Realtime seeing it."""
    e = engine_for(tmp_path, backend.info, A, poll_interval=poll_interval, **sync)
    e.start()
    try:
        wait_for(lambda: e.status.state == "connected" and e.status.realtime,
                 what="connected with Realtime live")
        app = app_db(tmp_path, A)
        _insert_unseen_by_realtime(backend.info.dsn, "missed")
        yield e, app
    finally:
        e.close()


def test_a_change_realtime_never_delivers_arrives_within_one_poll_interval(
        backend: DevServer, tmp_path: Path) -> None:
    with _live_engine(backend, tmp_path, poll_interval=1.0) as (e, app):
        t0 = time.monotonic()
        wait_for(lambda: app.execute("SELECT 1 FROM tasks WHERE id = 'missed'").fetchone(),
                 timeout=10, what="the missed change caught up while live")
        assert time.monotonic() - t0 < 3.0         # one poll interval, plus the catch-up
        assert e.status.realtime                     # it never left Realtime


def test_a_second_subscribed_on_a_live_channel_starts_a_catch_up(
        backend: DevServer, tmp_path: Path) -> None:
    # postgres_changes only: Realtime tells its channels that capture restarted. Broadcast
    # from Database has no such signal (hosted neither): the poll is its safety net.
    with _live_engine(backend, tmp_path, poll_interval=3600.0,
                      realtime_transport="postgres_changes") as (_e, app):
        # Realtime's change capture restarts: every live channel gets a second
        # "Subscribed to PostgreSQL" without being closed
        backend.restart_capture()
        wait_for(lambda: app.execute("SELECT 1 FROM tasks WHERE id = 'missed'").fetchone(),
                 timeout=10, what="the catch-up after the second Subscribed")


def test_a_409_from_a_contended_token_refresh_is_retried_not_a_dead_session(
        pg_dsn: str, tmp_path: Path) -> None:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn, jwt_exp=4, enable_faults=True)   # refresh after ~2 s
    srv.start()
    try:
        create_users(srv.info, (A,))
        e = engine_for(tmp_path, srv.info, A)
        e.start()
        try:
            wait_for(lambda: e.status.state == "connected", what="connected")
            # hosted Auth under refresh-token lock contention: 409 for the next refreshes
            srv.faults.add("auth", 409, count=2, path_prefix="/auth/v1/token")
            wait_for(lambda: srv.faults.pending == 0, timeout=15, what="the 409s answered")
            app = app_db(tmp_path, A)
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('after', ?, 'x')",
                        (A,))
            wait_for(lambda: e.status.state == "connected" and e.store.stats().depth == 0,
                     timeout=20, what=f"syncing again ({e.status})")
            assert not e.status.reauth_required
        finally:
            e.close()
    finally:
        srv.stop()


def test_a_partial_realtime_record_is_completed_by_fetching_that_record_only(
        backend: DevServer, tmp_path: Path) -> None:
    """Hosted Realtime leaves unchanged TOASTed values (> ~2 KB) out of UPDATE records.
    The record here is the server's real row with its large ``payload`` left out, handed
    to the engine's Realtime path; it must fetch that one record, not run a catch-up."""
    from tablesync.remote.base import ChangeEvent

    info = backend.info
    big = "x" * 5000
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, system_id, title, payload) VALUES "
                     "('t1', %s, 'before', %s)", (A, big))
    e = engine_for(tmp_path, info, A, realtime=False, poll_interval=3600.0)
    try:
        e.sync_once()
        with psycopg.connect(info.dsn, autocommit=True) as conn:
            conn.execute("UPDATE tasks SET title = 'after' WHERE id = 't1'")
            cur = conn.execute("SELECT to_jsonb(t) - 'payload' FROM tasks t WHERE id = 't1'")
            (record,) = cur.fetchone()  # type: ignore[misc]
        requests: list[str] = []
        remote = e.remote
        assert remote is not None
        original = remote.fetch  # type: ignore[attr-defined]

        def counting(*args: object, **kw: object) -> object:
            requests.append(str(args[0]))
            return original(*args, **kw)

        remote.fetch = counting  # type: ignore[attr-defined]  # observe, not replace
        cursor_before = e.store.get_cursor("tasks")
        e._apply_change(ChangeEvent("tasks", "UPDATE", record))
        app = app_db(tmp_path, A)
        assert app.execute("SELECT title, length(payload) FROM tasks WHERE id = 't1'"
                           ).fetchone() == ("after", 5000)
        assert requests == ["tasks"]                       # one fetch of that record
        assert e.store.get_cursor("tasks") == cursor_before   # no catch-up ran
    finally:
        e.close()
