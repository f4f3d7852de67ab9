"""`tablesync demo` as a user runs it: a subprocess with the real backend and engines."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tablesync.config import load_config
from tablesync.demo import DemoInfo, DemoSystem, instructions, system_config_text
from tablesync.project import load_project

ROOT = Path(__file__).resolve().parents[1]


def _engine_auth(database: str) -> dict[str, str]:
    """The running engine's API token, from its 0600 control file next to the database."""
    token = json.loads(Path(database + ".engine.json").read_text())["api_token"]
    return {"Authorization": f"Bearer {token}"}


def _info(data: dict[str, Any]) -> DemoInfo:
    systems = tuple(DemoSystem(**s) for s in data["systems"].values())
    return DemoInfo(dir=data["dir"], backend_url=data["backend_url"],
                    anon_key=data["anon_key"], service_key=data["service_key"], systems=systems)


def test_system_config_is_a_valid_sync_toml(tmp_path: Path) -> None:
    base = load_config(ROOT / "sync.toml")
    cfg = tmp_path / "system-b.toml"
    cfg.write_text(system_config_text(base, system_id="system-b", url="http://127.0.0.1:1",
                                      anon_key='k"ey', email="b@x.local", status_port=0))
    project = load_project(cfg)
    c = project.config
    assert (c.system.id, c.database_path) == ("system-b", tmp_path / "system-b.db")
    assert c.supabase is not None and c.supabase.anon_key == 'k"ey'
    assert c.status.port == 0 and c.schemas_dir == base.schemas_dir
    assert c.tables == base.tables and c.sync.batch_size == base.sync.batch_size
    assert c.resolve_path(c.paths.token_store) == tmp_path / "system-b.auth.json"


def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no output within {timeout}s; stderr: {err}")
    return proc.stdout.readline()


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.slow
def test_demo_syncs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    cmd = [sys.executable, "-m", "tablesync", "demo", "--config", str(ROOT / "sync.toml"),
           "--dir", str(demo_dir), "--port", "0", "--status-port", "0", "--json",
           "--duration", "120"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        data = json.loads(_line(proc, 40))
        info = _info(data)
        a, b = info.systems
        assert (a.id, b.id) == ("system-a", "system-b")
        for s in info.systems:
            status = httpx.get(s.status_url + "/api/status", timeout=5,
                               headers=_engine_auth(s.database)).json()
            assert (status["system_id"], status["state"]) == (s.id, "Connected")
        key = info.service_key
        headers = {"apikey": key, "Authorization": f"Bearer {key}"}

        # 1. plain sqlite3 into system-a's file -> the backend
        conn = sqlite3.connect(a.database, isolation_level=None, timeout=10)
        conn.execute("insert into tasks (id, system_id, title) values ('t1', 'system-a', 'x')")
        conn.close()
        url = f"{info.backend_url}/rest/v1/tasks?select=id,system_id,title&id=eq.t1"
        _until(lambda: httpx.get(url, headers=headers, timeout=5).json(), 15,
               "system-a's row did not reach the backend")

        # 2. a system-b task created over REST -> system-b's file, not system-a's
        res = httpx.post(f"{info.backend_url}/rest/v1/tasks", headers=headers, timeout=5,
                         json={"id": "t2", "system_id": "system-b", "title": "from REST"})
        assert res.status_code == 201, res.text
        _until(lambda: _rows(b.database, "select title from tasks where id = 't2'"), 15,
               "the REST task did not reach system-b")
        assert _rows(a.database, "select id from tasks") == [("t1",)]

        # the printed python3 alternative to the sqlite3 program works as printed
        text = instructions(info)
        line = next(x for x in text.splitlines() if x.strip().startswith("python3 -c")
                    and "system-a.db" in x)
        subprocess.run(line.strip().replace("'t1'", "'t3'"), shell=True, check=True,
                       cwd=tmp_path, timeout=30)
        assert _rows(a.database, "select id from tasks where id = 't3'") == [("t3",)]
        assert time.monotonic() - started < 40

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"stopped": True}
    for url in [info.backend_url] + [s.status_url for s in info.systems]:
        assert not _port_open(url), f"{url} still listening"
    assert not (demo_dir / "backend" / "pg" / "postmaster.pid").exists()
    assert _processes_mentioning(str(demo_dir)) == []
    passwords = json.loads((demo_dir / "passwords.json").read_text())
    assert (demo_dir / "passwords.json").stat().st_mode & 0o077 == 0
    for pw in passwords.values():
        assert pw not in out + err
    assert not (demo_dir / "system-a.db.engine.json").exists()

    # a second run reuses the folder: same users (signed in again), the rows still there;
    # Ctrl-C (SIGINT) stops it like SIGTERM
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        again = _info(json.loads(_line(proc, 40)))
        for s in again.systems:
            status = httpx.get(s.status_url + "/api/status", timeout=5,
                               headers=_engine_auth(s.database)).json()
            assert status["state"] == "Connected", status
        url = f"{again.backend_url}/rest/v1/tasks?select=id&order=id"
        rows = httpx.get(url, headers=headers, timeout=5).json()
        assert [r["id"] for r in rows] == ["t1", "t2", "t3"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert _processes_mentioning(str(demo_dir)) == []


def test_demo_help_lists_its_options() -> None:
    from typer.testing import CliRunner

    from tablesync.cli import app

    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0
    for opt in ("--dir", "--port", "--status-port", "--duration", "--json", "--reset"):
        assert opt in res.output


@pytest.mark.slow
def test_taken_status_port_names_the_option_and_stops_what_started(tmp_path: Path) -> None:
    from tablesync.demo import Demo
    from tablesync.errors import TablesyncError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = Demo(ROOT / "sync.toml", tmp_path / "demo", port=0, status_port=port)
        with pytest.raises(TablesyncError, match="--status-port"):
            demo.start()
    assert demo._server is None and demo._running == []
    assert not (tmp_path / "demo" / "backend" / "pg" / "postmaster.pid").exists()
