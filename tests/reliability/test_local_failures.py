"""Local failures are named for what they are and lose nothing (issue 16 items 3 and 4):
a Realtime change that meets a locked or full local database is retried from a catch-up
until it applies; meanwhile the cause is ``local_locked``/``local_full`` and the light is
red. The status API answers within 100 ms while the store waits on a lock, and a running
engine in "re-auth required" resumes by itself after ``tablesync login``. All real: the
devserver, PostgreSQL, SQLite locks held by another connection, SQLite's own SQLITE_FULL."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tablesync.causes import Cause
from tablesync.config import load_config
from tablesync.daemon import realtime_factory
from tablesync.devserver.server import DevServer
from tablesync.engine import Engine
from tablesync.errors import StoreError
from tablesync.remote.rest import RestRemote
from tablesync.session import Session, login
from tablesync.store import LocalStore
from tablesync.vault import Secret, Vault
from tablesync.web.server import StatusServer

from .stack import (app_db, create_schema, create_users, email, password, pg, project_for,
                    wait_for, write_config)

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


def _engine(tmp: Path, srv: DevServer, *, busy: float, with_password: bool = True,
            **sync: object) -> Engine:
    """System A's engine whose store gives up on a lock after ``busy`` seconds."""
    info = srv.info
    project = project_for(tmp, info, A, **sync)
    remote = RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(tmp / f"{A}-auth.json"), project=info.url,
                      email=email(A), password=Secret(password(A)) if with_password else None)
    remote.tokens = session
    return Engine(project, store=LocalStore.open(project, busy_timeout=busy), remote=remote,
                  session=session, realtime_factory=realtime_factory, own_remote=True)


@contextmanager
def _live(e: Engine) -> Iterator[Engine]:
    e.start()
    try:
        wait_for(lambda: e.status.state == "connected" and e.status.realtime, timeout=15,
                 what="connected with Realtime live")
        yield e
    finally:
        e.close()


def _local_title(tmp: Path, rid: str) -> str | None:
    row = app_db(tmp, A).execute("SELECT title FROM tasks WHERE id = ?", (rid,)).fetchone()
    return None if row is None else str(row[0])


def test_a_realtime_change_meeting_a_locked_database_arrives_after_the_lock(
        backend: DevServer, tmp_path: Path) -> None:
    # poll_interval far away: only the catch-up the failure asks for can bring the row
    with _live(_engine(tmp_path, backend, busy=0.3, poll_interval=300.0)) as e:
        locker = sqlite3.connect(tmp_path / f"{A}.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")       # another process holds the write lock
        try:
            pg(backend.info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES "
                                 "('r1', %s, 'while locked')", A)
            wait_for(lambda: e.cause is Cause.LOCAL_LOCKED, timeout=10,
                     what="the failed apply classified as local_locked")
            t0 = time.perf_counter()
            snap = e.snapshot()
            assert time.perf_counter() - t0 < 0.1
            assert snap.cause == "local_locked" and snap.indicator == "red"
            assert _local_title(tmp_path, "r1") is None
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: _local_title(tmp_path, "r1") == "while locked", timeout=15,
                 what="the change applied by the retried catch-up")
        wait_for(lambda: e.snapshot().cause == "none", what="the cause cleared")


def test_a_full_database_is_local_full_and_the_change_arrives_once_there_is_room(
        backend: DevServer, tmp_path: Path) -> None:
    e = _engine(tmp_path, backend, busy=0.3, poll_interval=300.0)
    with _live(e):
        # SQLite's own SQLITE_FULL: the store's connection may not grow the file (the
        # private connection is the only handle on that limit, which is per connection)
        with e.store._lock:
            (pages,) = e.store._conn.execute("PRAGMA page_count").fetchone()
            e.store._conn.execute(f"PRAGMA max_page_count = {pages}")
        try:
            pg(backend.info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES "
                                 "('big', %s, repeat('x', 200000))", A)
            wait_for(lambda: e.cause is Cause.LOCAL_FULL, timeout=10,
                     what="the failed apply classified as local_full")
            snap = e.snapshot()
            assert snap.indicator == "red" and "full" in (snap.last_error or "")
        finally:
            with e.store._lock:
                e.store._conn.execute("PRAGMA max_page_count = 1073741823")
        wait_for(lambda: (_local_title(tmp_path, "big") or "").startswith("xxx"), timeout=15,
                 what="the big row applied once the database may grow")


def _blocked_write(store: LocalStore) -> None:
    try:
        store.note_synced()
    except StoreError:
        pass                                     # gave up on the lock: expected


def test_status_api_answers_within_100ms_while_the_store_waits_on_a_lock(
        tmp_path: Path) -> None:
    project = project_for(tmp_path, None, A)     # local-only: no backend needed
    e = Engine(project, store=LocalStore.open(project, busy_timeout=5.0))
    server = StatusServer(e)
    server.start()
    e.start()
    locker = sqlite3.connect(tmp_path / f"{A}.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        # a store write now waits (holding the store's lock) for up to 5 s
        writer = threading.Thread(target=_blocked_write, args=(e.store,), daemon=True)
        writer.start()
        time.sleep(0.2)
        for _ in range(3):
            time.sleep(0.25)                     # past the snapshot's 0.2 s cache
            t0 = time.perf_counter()
            req = urllib.request.Request(server.url + "/api/status", headers={
                "Authorization": f"Bearer {server.api_token}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = json.loads(resp.read())
            assert time.perf_counter() - t0 < 0.1, "status API blocked by the store"
            assert body["state"] == "LocalOnly" and body["queue_depth"] == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        server.stop()
        e.close()


def test_a_running_engine_resumes_by_itself_after_tablesync_login(
        backend: DevServer, tmp_path: Path) -> None:
    e = _engine(tmp_path, backend, busy=5.0, with_password=False)
    e.start()
    try:
        wait_for(lambda: e.status.reauth_required, timeout=10, what="re-auth required")
        assert e.snapshot().indicator == "red"
        cfg = write_config(tmp_path, backend.info, A)
        login(load_config(cfg), Secret(password(A)))   # what `tablesync login` does
        wait_for(lambda: e.status.state == "connected" and not e.status.reauth_required,
                 timeout=10, what="resumed without Sync now")
        app_db(tmp_path, A).execute(
            "INSERT INTO tasks (id, system_id, title) VALUES ('after-login', ?, 'x')", (A,))
        wait_for(lambda: pg(backend.info.dsn, "SELECT 1 FROM tasks WHERE id = 'after-login'"),
                 timeout=10, what="pushed after the login")
    finally:
        e.close()
