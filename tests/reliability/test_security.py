"""Issue 6 item 4 (security): system A's real JWT gets nothing of system B; tokens are
encrypted at rest with mode 0600; no secret ever reaches a log line or status output.

Everything runs against the real devserver + PostgreSQL; A's token comes from a real
password sign-in (GoTrue grant) on the devserver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.devserver.server import DevServer
from tablesync.remote.realtime import websocket_url
from tablesync.remote.rest import RestRemote
from tablesync.vault import Secret, Vault

from .stack import app_db, email, password, pg, start_backend, wait_for, write_config

pytestmark = pytest.mark.postgres

A, B = "system-a", "system-b"
ROW = {"project_id": None, "status": "pending", "priority": 0, "payload": None,
       "updated_at": None, "_ts_deleted": False, "_ts_base_hlc": 0, "_ts_base_origin": ""}


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    srv = start_backend(pg_dsn)
    yield srv
    srv.stop()


def _sign_in(srv: DevServer, system: str) -> str:
    with RestRemote(srv.info.url, srv.info.anon_key) as r:
        return r.sign_in(email(system), Secret(password(system))).access_token.reveal()


def _client(srv: DevServer, jwt: str) -> httpx.Client:
    return httpx.Client(base_url=srv.info.url, timeout=10, headers={
        "apikey": srv.info.anon_key, "Authorization": f"Bearer {jwt}",
        "Content-Type": "application/json"})


def _server_rows(srv: DevServer) -> list[tuple[Any, ...]]:
    return pg(srv.info.dsn, "SELECT id, system_id, title, _ts_deleted, _ts_hlc, _ts_origin "
                            "FROM tasks ORDER BY id")


def _hlc() -> int:
    return (int(time.time() * 1000) + 60_000) << 16     # a minute ahead: would win LWW


def _apply_row(rid: str, system: str, title: str, **kw: Any) -> dict[str, Any]:
    return {**ROW, "id": rid, "system_id": system, "title": title, "_ts_hlc": _hlc(),
            "_ts_origin": A, **kw}


def test_rest_cross_system_access_is_refused(backend: DevServer) -> None:
    dsn = backend.info.dsn
    pg(dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('a1', %s, 'mine'), "
            "('b1', %s, 'secret of b')", A, B)
    before = _server_rows(backend)
    with _client(backend, _sign_in(backend, A)) as http:
        # read: B's rows are invisible however they are asked for
        assert [r["id"] for r in http.get("/rest/v1/tasks?select=*").json()] == ["a1"]
        for query in ("id=eq.b1", f"system_id=eq.{B}", "title=eq.secret%20of%20b",
                      "or=(id.eq.b1,system_id.eq.system-b)"):
            r = http.get(f"/rest/v1/tasks?select=*&{query}")
            assert r.status_code in (200, 400) and (r.status_code == 400 or r.json() == []), \
                (query, r.text)
        # insert into B's scope
        r = http.post("/rest/v1/tasks", json={"id": "b2", "system_id": B, "title": "x"})
        assert r.status_code in (401, 403), r.text
        # update / delete B's row (invisible: PostgREST answers success with 0 rows)
        r = http.patch("/rest/v1/tasks?id=eq.b1", json={"title": "hacked"},
                       headers={"Prefer": "return=representation"})
        assert r.status_code in (200, 204, 403) and (r.status_code != 200 or r.json() == [])
        r = http.delete("/rest/v1/tasks?id=eq.b1", headers={"Prefer": "return=representation"})
        assert r.status_code in (200, 204, 403) and (r.status_code != 200 or r.json() == [])
        # re-scope A's row to B, and B's row to A
        r = http.patch("/rest/v1/tasks?id=eq.a1", json={"system_id": B})
        assert r.status_code in (401, 403), r.text
        r = http.patch("/rest/v1/tasks?id=eq.b1", json={"system_id": A},
                       headers={"Prefer": "return=representation"})
        assert r.status_code in (200, 204, 403) and (r.status_code != 200 or r.json() == [])
        # upsert over B's primary key
        r = http.post("/rest/v1/tasks", json={"id": "b1", "system_id": A, "title": "stolen"},
                      headers={"Prefer": "resolution=merge-duplicates"})
        assert r.status_code >= 400, r.text
    assert _server_rows(backend) == before


def test_apply_rpc_with_b_rows_is_forbidden(backend: DevServer) -> None:
    dsn = backend.info.dsn
    pg(dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('a1', %s, 'mine'), "
            "('b1', %s, 'secret of b')", A, B)
    before = _server_rows(backend)
    rows = [
        _apply_row("b2", B, "new row in B"),                     # insert into B
        _apply_row("b1", B, "overwrite B"),                      # update B's row
        _apply_row("b1", B, "delete B", _ts_deleted=True),       # tombstone B's row
        _apply_row("a1", B, "push mine to B"),                   # re-scope A -> B
        _apply_row("b1", A, "pull B's row to A"),                # re-scope B -> A
    ]
    with _client(backend, _sign_in(backend, A)) as http:
        for row in rows:
            r = http.post("/rest/v1/rpc/tablesync_apply_tasks", json={"rows": [row]})
            if r.status_code == 200:
                out = r.json()
                assert len(out) == 1 and out[0]["outcome"] in ("forbidden", "error"), (row, out)
                assert out[0]["row"] is None or out[0]["row"].get("system_id") != B, out
            else:
                assert r.status_code in (401, 403), r.text
        # a whole batch mixing A's and B's rows: A's row goes through, B's do not
        ok = _apply_row("a2", A, "legit")
        r = http.post("/rest/v1/rpc/tablesync_apply_tasks", json={"rows": [rows[0], ok]})
        assert r.status_code == 200, r.text
        assert [o["outcome"] for o in r.json()] == ["forbidden", "applied"]
    after = _server_rows(backend)
    assert [row for row in after if row[0] != "a2"] == before
    assert [row[:3] for row in after if row[0] == "a2"] == [("a2", A, "legit")]


async def _subscribe(ws: Any, topic: str, changes: list[dict[str, Any]], jwt: str) -> None:
    payload = {"config": {"broadcast": {"ack": False, "self": False},
                          "presence": {"enabled": False, "key": ""},
                          "postgres_changes": changes, "private": False},
               "access_token": jwt}
    await ws.send(json.dumps({"topic": topic, "event": "phx_join", "payload": payload,
                              "ref": topic, "join_ref": topic}))


async def _frames(ws: Any, seconds: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return out


def test_realtime_subscription_to_b_gets_nothing(backend: DevServer) -> None:
    jwt = _sign_in(backend, A)
    table = {"event": "*", "schema": "public", "table": "tasks"}
    channels = {"realtime:own": [{**table, "filter": f"system_id=eq.{A}"}],
                "realtime:b": [{**table, "filter": f"system_id=eq.{B}"}],
                "realtime:all": [table],
                "realtime:b-id": [{**table, "filter": "id=eq.b1"}]}

    async def main() -> dict[str, list[dict[str, Any]]]:
        url = websocket_url(backend.info.url, backend.info.anon_key, "1.0.0")
        async with websockets.connect(url) as ws:
            for topic, changes in channels.items():
                await _subscribe(ws, topic, changes, jwt)
            joined = await _frames(ws, 1.5)
            live = {f["topic"] for f in joined if f["event"] == "system"
                    and f["payload"].get("message") == "Subscribed to PostgreSQL"}
            assert live == set(channels), joined     # every join was accepted ...
            pg(backend.info.dsn, "INSERT INTO tasks (id, system_id, title) "
                                 "VALUES ('b1', %s, 'for b only')", B)
            pg(backend.info.dsn, "UPDATE tasks SET title = 'still b' WHERE id = 'b1'")
            pg(backend.info.dsn, "INSERT INTO tasks (id, system_id, title) "
                                 "VALUES ('a1', %s, 'for a')", A)
            frames = await _frames(ws, 2.0)
        events: dict[str, list[dict[str, Any]]] = {t: [] for t in channels}
        for f in frames:
            if f["event"] == "postgres_changes":
                events[f["topic"]].append(f["payload"]["data"]["record"])
        return events

    events = asyncio.run(main())
    # ... but only A's own row is ever delivered, on the channels whose filter matches it
    assert [r["id"] for r in events["realtime:own"]] == ["a1"]
    assert [r["id"] for r in events["realtime:all"]] == ["a1"]
    assert events["realtime:b"] == [] and events["realtime:b-id"] == []


# ----------------------------------------------------------------- tokens at rest


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"])
def test_login_stores_tokens_encrypted_and_0600(backend: DevServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                passphrase: str | None) -> None:
    cfg = write_config(tmp_path, backend.info, A)
    monkeypatch.setenv("TABLESYNC_SUPABASE__PASSWORD", password(A))
    if passphrase:
        monkeypatch.setenv("TABLESYNC_PASSPHRASE", passphrase)
    result = CliRunner().invoke(app, ["login", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    token_file = tmp_path / f"{A}-auth.json"
    key_file = Path(str(token_file) + ".key")
    assert _mode(token_file) == 0o600
    assert key_file.exists() == (passphrase is None)
    if passphrase is None:
        assert _mode(key_file) == 0o600
    tokens = Vault(token_file).load()
    assert tokens is not None
    raw = token_file.read_bytes() + (key_file.read_bytes() if key_file.exists() else b"")
    secrets = [tokens.access_token.reveal(), tokens.refresh_token.reveal(), password(A)]
    if passphrase:
        secrets.append(passphrase)
    for secret in secrets:
        assert secret.encode() not in raw
    # the JWT's payload part (base64) must not be readable either
    assert tokens.access_token.reveal().split(".")[1].encode() not in raw
    assert password(A) not in result.output and tokens.refresh_token.reveal() not in result.output


# ------------------------------------------------------------- secrets never logged


class _ClientSide(logging.Filter):
    """Only the engine process' records (the devserver stands in for a remote host)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("tablesync.devserver", "uvicorn"))


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "engine-debug.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_ClientSide())
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old)
    handler.close()


@pytest.mark.slow
def test_no_secret_in_logs_or_status_output(pg_dsn: str, tmp_path: Path, debug_log: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tablesync import daemon
    from tablesync.project import load_project
    from tablesync.web.server import StatusServer

    issued: list[Any] = []
    real_tokens = RestRemote._tokens

    def spy(body: Any, what: str) -> Any:     # records every token pair the server issued
        tokens = real_tokens(body, what)
        issued.append(tokens)
        return tokens

    monkeypatch.setattr(RestRemote, "_tokens", staticmethod(spy))
    passphrase = "tr0ub4dor & 3 -- passphrase"
    monkeypatch.setenv("TABLESYNC_PASSPHRASE", passphrase)
    srv = start_backend(pg_dsn, jwt_exp=4)
    monkeypatch.setenv("TABLESYNC_SUPABASE__PASSWORD", password(A))
    outputs: list[str] = []
    runner = CliRunner()
    try:
        info = srv.info
        cfg = write_config(tmp_path, info, A)
        result = runner.invoke(app, ["login", "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        monkeypatch.delenv("TABLESYNC_SUPABASE__PASSWORD")   # the engine lives on tokens
        project = load_project(cfg)
        with daemon.build_engine(project) as engine:
            status = StatusServer(engine)
            status.start()
            daemon.write_control(project, status.url, status.csrf_token, status.api_token)
            try:
                engine.start()
                wait_for(lambda: engine.status.state == "connected" and engine.status.realtime,
                         what="connected")
                local = app_db(tmp_path, A)
                for i in range(5):
                    local.execute("INSERT INTO tasks (id, system_id, title) "
                                   "VALUES (?, ?, 'x')", (f"l{i}", A))
                    pg(info.dsn, "INSERT INTO tasks (id, system_id, title) "
                                 "VALUES (%s, %s, 'r')", f"r{i}", A)
                    time.sleep(1.0)
                wait_for(lambda: len(issued) >= 3, timeout=15, what="two token refreshes")
                wait_for(lambda: pg(info.dsn, "SELECT count(*) FROM tasks") == [(10,)]
                         and local.execute("SELECT count(*) FROM tasks").fetchone() == (10,)
                         and engine.store.stats().depth == 0, timeout=15, what="converged")
                for path in ("/api/status", "/metrics", "/"):
                    r = httpx.get(status.url + path, timeout=5, headers=status.auth_headers())
                    assert r.status_code == 200, (path, r.status_code)
                    outputs.append(r.text)
                for args in (["sync", "status", "--json"], ["sync", "status"],
                             ["sync", "now"], ["sync", "conflicts", "--json"]):
                    result = runner.invoke(app, [*args, "--config", str(cfg)])
                    # `sync status` exits 1 while yellow (e.g. Syncing), 0 when green
                    ok = (0, 1) if args[1] == "status" else (0,)
                    assert result.exit_code in ok, (args, result.output)
                    outputs.append(result.output)
                assert json.loads(outputs[-4])["state"] in ("Connected", "Syncing")
                outputs.append(repr(engine.status) + repr(engine.snapshot()) + repr(engine))
            finally:
                daemon.remove_control(project)
                status.stop()
    finally:
        srv.stop()
    log_text = debug_log.read_text()
    assert log_text.count("\n") > 20 and "tablesync." in log_text   # it did log, at DEBUG
    secrets = {"password": password(A), "anon key": info.anon_key,
               "service key": info.service_key, "passphrase": passphrase}
    for n, tokens in enumerate(issued):
        access, refresh = tokens.access_token.reveal(), tokens.refresh_token.reveal()
        secrets[f"access token {n}"] = access
        secrets[f"access token {n} signature"] = access.rsplit(".", 1)[-1]
        secrets[f"refresh token {n}"] = refresh
    token_file = tmp_path / f"{A}-auth.json"              # rewritten by every refresh
    assert _mode(token_file) == 0o600
    haystacks = {"debug log": log_text, "token file": token_file.read_text(),
                 **{f"output {i}": o for i, o in enumerate(outputs)}}
    leaks = [(what, where) for what, secret in secrets.items()
             for where, text in haystacks.items() if secret in text]
    assert leaks == []
