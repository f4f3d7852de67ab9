"""DevServer lifecycle and the ``tablesync devserver`` command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tablesync.devserver.errors import DevServerError
from tablesync.devserver.server import DevServer
from tablesync.devserver.settings import SECRET_FILE

from .helpers import anon_headers, create_user, service_headers, sign_in

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_restart_on_same_port_and_data_dir_keeps_keys_users_and_rows(tmp_path: Path) -> None:
    schema = tmp_path / "supabase.sql"
    schema.write_text("CREATE TABLE notes (id int PRIMARY KEY, body text);")  # not idempotent
    srv = DevServer(data_dir=tmp_path / "data", apply=[schema], auto_realtime=False)
    info = srv.start()
    try:
        assert info.url.startswith("http://127.0.0.1:")
        assert {host for host, _port in srv.listening} == {"127.0.0.1"}
        secret = tmp_path / "data" / SECRET_FILE
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "keep@example.com", "s")
            resp = http.post("/rest/v1/notes", headers=service_headers(info),
                             json={"id": 1, "body": "hi"})
            assert resp.status_code == 201
        srv.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{info.url}/auth/v1/health", timeout=2)
        again = srv.start()
        assert (again.url, again.anon_key, again.service_key) == \
            (info.url, info.anon_key, info.service_key)
        with httpx.Client(base_url=again.url) as http:
            assert sign_in(http, again, "keep@example.com")["access_token"]
            assert http.get("/rest/v1/notes?select=body", headers=anon_headers(again)).json() == \
                [{"body": "hi"}]
        srv.stop(keep_postgres=True)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{info.url}/auth/v1/health", timeout=2)
        assert srv.start().url == info.url
        assert httpx.get(f"{info.url}/auth/v1/health").status_code == 200
    finally:
        srv.stop()


def test_apply_file_errors_name_the_file(tmp_path: Path, pg_dsn: str) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE broken (;")
    with pytest.raises(DevServerError, match="bad.sql"):
        DevServer(dsn=pg_dsn, apply=[bad], auto_realtime=False).start()


def test_cli_prints_one_json_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tablesync", "devserver", "--port", "0", "--json",
         "--data", str(tmp_path / "data"), "--jwt-exp", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert set(info) == {"url", "anon_key", "service_key", "publishable_key", "secret_key"}
        assert info["publishable_key"].startswith("sb_publishable_")
        resp = httpx.get(f"{info['url']}/rest/v1/", headers={"apikey": info["anon_key"]})
        assert resp.status_code == 200
        resp = httpx.post(f"{info['url']}/auth/v1/signup", headers={"apikey": info["anon_key"]},
                          json={"email": "cli@example.com", "password": "pass-word-1"})
        assert resp.json()["expires_in"] == 120
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{info['url']}/auth/v1/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_temporary_data_dir_is_removed_by_the_context_manager() -> None:
    srv = DevServer(auto_realtime=False)
    with srv as info:
        assert info.url and srv.data_dir is not None and srv.data_dir.exists()
    assert not srv.data_dir.exists()


def test_port_in_use_is_one_clear_error(pg_dsn: str) -> None:
    first = DevServer(dsn=pg_dsn, auto_realtime=False)
    info = first.start()
    try:
        port = int(info.url.rsplit(":", 1)[1])
        with pytest.raises(DevServerError, match=f"could not start on 127.0.0.1:{port}"):
            DevServer(dsn=pg_dsn, auto_realtime=False, port=port).start()
    finally:
        first.stop()
