"""No echo (issue 14 item 3): with Broadcast from Database a system's own pushes are never
sent back to it, while changes it did not make reach it over Realtime; moves between scopes
deliver the exit and the entry; awkward system ids work on both transports. Real stack:
devserver (PostgreSQL, REST, Auth, Realtime) and engines with the real clients. Realtime is
the only way a server change can arrive here: every engine polls once an hour."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tablesync.daemon import realtime_factory
from tablesync.devserver.server import DevServer
from tablesync.engine import Engine
from tablesync.project import load_project
from tablesync.remote.base import system_topic
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.vault import Secret, Vault

from .stack import (app_db, create_schema, create_users, email, engine_for, password, pg,
                    wait_for, write_config)

pytestmark = pytest.mark.postgres
A, B = "system-a", "system-b"
N = 20
NO_POLL = 3600.0


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn, realtime_rate_limit=0)
    srv.start()
    create_users(srv.info, (A, B))
    yield srv
    srv.stop()


def _live(e: Engine) -> None:
    wait_for(lambda: e.status.state == "connected" and e.status.realtime,
             what=f"connected with Realtime live ({e.status})")


def _received(e: Engine) -> int:
    client = e._realtime  # the engine's RealtimeClient: its counters are what arrived
    return int(client.stats.changes) if client is not None else 0


def _sent_to(dsn: str, system: str) -> int:
    return int(pg(dsn, "SELECT count(*) FROM realtime.messages WHERE topic = %s",
                  system_topic(system))[0][0])


def _server_insert(dsn: str, system: str, ids: list[str]) -> None:
    for rid in ids:
        pg(dsn, "INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, 'from the server')",
           rid, system)


def test_own_pushes_are_not_echoed_other_changes_arrive(backend: DevServer,
                                                        tmp_path: Path) -> None:
    dsn = backend.info.dsn
    e = engine_for(tmp_path, backend.info, A, poll_interval=NO_POLL)
    e.start()
    try:
        _live(e)
        app = app_db(tmp_path, A)
        for i in range(N):
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'mine')",
                        (f"own-{i}", A))
        wait_for(lambda: pg(dsn, "SELECT count(*) FROM tasks WHERE id LIKE 'own-%%'")[0][0]
                 == N and e.store.stats().depth == 0, what="the pushes on the server")
        time.sleep(0.5)  # anything the server would send has had time to arrive
        assert _sent_to(dsn, A) == 0      # no message at all: nothing to deliver, or to pay
        assert _received(e) == 0
        # changes this system did not make (a dashboard, another writer) all arrive
        _server_insert(dsn, A, [f"srv-{i}" for i in range(N)])
        wait_for(lambda: app.execute("SELECT count(*) FROM tasks WHERE id LIKE 'srv-%'")
                 .fetchone()[0] == N, what="the server's rows over Realtime")
        assert _received(e) == N
        assert _sent_to(dsn, A) == N
    finally:
        e.close()


def test_postgres_changes_echoes_every_push(backend: DevServer, tmp_path: Path) -> None:
    """The fallback transport's cost, measured: each pushed row comes back to its pusher."""
    e = engine_for(tmp_path, backend.info, A, poll_interval=NO_POLL,
                   realtime_transport="postgres_changes")
    e.start()
    try:
        _live(e)
        app = app_db(tmp_path, A)
        for i in range(N):
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'mine')",
                        (f"own-{i}", A))
        wait_for(lambda: _received(e) >= N, what="the echoes of the pushes")
    finally:
        e.close()


def test_a_move_between_scopes_delivers_the_exit_and_the_entry(backend: DevServer,
                                                                tmp_path: Path) -> None:
    dsn = backend.info.dsn
    ea = engine_for(tmp_path, backend.info, A, poll_interval=NO_POLL)
    eb = engine_for(tmp_path, backend.info, B, poll_interval=NO_POLL)
    ea.start()
    eb.start()
    try:
        _live(ea)
        _live(eb)
        app_a, app_b = app_db(tmp_path, A), app_db(tmp_path, B)
        _server_insert(dsn, A, ["moving"])
        wait_for(lambda: app_a.execute("SELECT 1 FROM tasks WHERE id = 'moving'").fetchone(),
                 what="the row at A")
        pg(dsn, "UPDATE tasks SET system_id = %s WHERE id = 'moving'", B)
        wait_for(lambda: app_b.execute("SELECT 1 FROM tasks WHERE id = 'moving'").fetchone(),
                 what="the entry at B")
        wait_for(lambda: not app_a.execute("SELECT 1 FROM tasks WHERE id = 'moving'")
                 .fetchone(), what="the exit at A")
    finally:
        ea.close()
        eb.close()


AWKWARD = 'sys, "q" (1)\\x'


def _awkward_engine(tmp: Path, backend: DevServer, transport: str) -> Engine:
    """An engine whose system id has a comma, quotes, parentheses, spaces and a backslash
    (the user is signed in as ``awk@example.com``; only ``[system] id`` is awkward)."""
    cfg = write_config(tmp, backend.info, "awk", poll_interval=NO_POLL,
                       realtime_transport=transport)
    cfg.write_text(cfg.read_text().replace('id = "awk"', f"id = {json.dumps(AWKWARD)}", 1))
    project = load_project(cfg)
    remote = RestRemote(backend.info.url, backend.info.anon_key,
                        tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(tmp / "awk-auth.json"), project=backend.info.url,
                      email=email("awk"), password=Secret(password("awk")))
    remote.tokens = session
    return Engine(project, remote=remote, session=session, realtime_factory=realtime_factory,
                  own_remote=True)


@pytest.mark.parametrize("transport", ["broadcast", "postgres_changes"])
def test_awkward_system_id_works_on_both_transports(backend: DevServer, tmp_path: Path,
                                                    transport: str) -> None:
    with RestRemote(backend.info.url, backend.info.anon_key) as admin:
        admin.admin_create_user(Secret(backend.info.service_key), email("awk"),
                                Secret(password("awk")), {"system_id": AWKWARD})
    e = _awkward_engine(tmp_path, backend, transport)
    e.start()
    try:
        _live(e)
        _server_insert(backend.info.dsn, AWKWARD, ["odd"])
        _server_insert(backend.info.dsn, "sys", ["not-mine"])  # a filter split at the comma
        app = app_db(tmp_path, "awk")
        wait_for(lambda: app.execute("SELECT 1 FROM tasks WHERE id = 'odd'").fetchone(),
                 what="the awkward system's row over Realtime")
        assert app.execute("SELECT 1 FROM tasks WHERE id = 'not-mine'").fetchone() is None
    finally:
        e.close()


def test_a_private_join_on_another_systems_topic_is_refused(backend: DevServer) -> None:
    """RLS on realtime.messages: A's user may join A's topic only (the engine's channel)."""
    import asyncio

    import websockets

    with RestRemote(backend.info.url, backend.info.anon_key) as remote:
        tokens = remote.sign_in(email(A), Secret(password(A)))
    host = backend.info.url.removeprefix("http://")

    async def join(topic: str) -> Any:
        async with websockets.connect(f"ws://{host}/realtime/v1/websocket?apikey="
                                      f"{backend.info.anon_key}&vsn=1.0.0") as ws:
            await ws.send(json.dumps({"topic": f"realtime:{topic}", "event": "phx_join",
                                      "ref": "1", "payload": {
                                          "config": {"private": True, "postgres_changes": []},
                                          "access_token": tokens.access_token.reveal()}}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["event"] == "phx_reply":
                    return msg["payload"]

    assert asyncio.run(join(system_topic(A)))["status"] == "ok"
    refused = asyncio.run(join(system_topic(B)))
    assert refused["status"] == "error"
    assert refused["response"]["reason"].startswith("Unauthorized: ")


@pytest.mark.parametrize("transport", ["broadcast", "postgres_changes"])
def test_both_transports_work_on_a_private_only_project(pg_dsn: str, tmp_path: Path,
                                                        transport: str) -> None:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn, realtime_rate_limit=0, private_only_channels=True)
    srv.start()
    try:
        create_users(srv.info, (A,))
        e = engine_for(tmp_path, srv.info, A, poll_interval=NO_POLL,
                       realtime_transport=transport)
        e.start()
        try:
            _live(e)
            _server_insert(pg_dsn, A, ["private"])
            app = app_db(tmp_path, A)
            wait_for(lambda: app.execute("SELECT 1 FROM tasks WHERE id = 'private'")
                     .fetchone(), what="the row over a private channel")
        finally:
            e.close()
    finally:
        srv.stop()


def test_an_oversized_change_arrives_as_a_hint_and_is_fetched(backend: DevServer,
                                                              tmp_path: Path) -> None:
    """Over the broadcast size limit the trigger sends keys only; the engine completes the
    partial record by REST (polling is off, so only the hint can bring it) and applies it
    whole."""
    import psycopg

    e = engine_for(tmp_path, backend.info, A, poll_interval=NO_POLL)
    e.start()
    try:
        _live(e)
        with psycopg.connect(backend.info.dsn, autocommit=True) as conn:
            conn.execute("SET tablesync.broadcast_max_bytes = 1000")
            conn.execute("INSERT INTO tasks (id, system_id, title, payload)"
                         " VALUES ('big', %s, 't', %s)", (A, "x" * 5000))
        assert pg(backend.info.dsn, "SELECT payload -> 'partial' FROM realtime.messages")[0][0]
        app = app_db(tmp_path, A)
        wait_for(lambda: app.execute("SELECT length(payload) FROM tasks WHERE id = 'big'")
                 .fetchone() == (5000,), what="the whole row, fetched after the hint")
    finally:
        e.close()
