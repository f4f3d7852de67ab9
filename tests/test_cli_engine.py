"""`tablesync provision`, `login` and `run` against the real devserver."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.devserver.server import DevServer
from tablesync.vault import Vault

from reliability.stack import create_schema

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    yield srv
    srv.stop()


def _config(tmp: Path, srv: DevServer) -> Path:
    info = srv.info
    cfg = tmp / "sync.toml"
    cfg.write_text(
        f'[system]\nid = "system-a"\ndatabase = "{tmp}/a.db"\n[supabase]\nurl = "{info.url}"\n'
        f'anon_key = "{info.anon_key}"\nemail = "a@example.com"\n[sync]\ndebounce = 0.01\n'
        '[status]\nport = 0\n'
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp}/auth.json"\n'
        f'conflict_log = "{tmp}/conflicts.log"\n[tables.projects]' + TABLES)
    return cfg


def test_provision_login_run(backend: DevServer, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, backend)
    runner = CliRunner()
    res = runner.invoke(app, ["provision", "--config", str(cfg), "--system-id", "system-a",
                              "--email", "a@example.com"], input="pw-system-a\n")
    assert res.exit_code == 2 and "TABLESYNC_SUPABASE__SERVICE_KEY" in res.output
    monkeypatch.setenv("TABLESYNC_SUPABASE__SERVICE_KEY", backend.info.service_key)
    res = runner.invoke(app, ["provision", "--config", str(cfg), "--system-id", "system-a",
                              "--email", "a@example.com"], input="pw-system-a\n")
    assert res.exit_code == 0, res.output
    assert "for system system-a" in res.output and "pw-system-a" not in res.output.split("\n", 1)[1]
    monkeypatch.delenv("TABLESYNC_SUPABASE__SERVICE_KEY")
    res = runner.invoke(app, ["login", "--config", str(cfg)], input="wrong\n")
    assert res.exit_code == 1 and "Invalid login credentials" in res.output
    res = runner.invoke(app, ["login", "--config", str(cfg)], input="pw-system-a\n")
    assert res.exit_code == 0, res.output
    tokens = Vault(tmp_path / "auth.json").load()
    assert tokens is not None and tokens.project == backend.info.url

    # `tablesync run` uses the stored tokens (no password in its environment)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("state: connected"):
                break
        else:
            raise AssertionError("".join(lines))
        app_db = sqlite3.connect(tmp_path / "a.db", isolation_level=None, timeout=30)
        app_db.execute("INSERT INTO tasks (id, system_id, title) VALUES ('c1', 'system-a', 'x')")
        deadline = time.monotonic() + 10
        with psycopg.connect(backend.info.dsn, autocommit=True) as pg:
            while not pg.execute("SELECT 1 FROM tasks WHERE id = 'c1'").fetchall():
                assert time.monotonic() < deadline, "row not pushed by `tablesync run`"
                time.sleep(0.05)
        # `sync status` / `sync now` talk to the running engine
        res = runner.invoke(app, ["sync", "status", "--config", str(cfg), "--json"])
        status = json.loads(res.output)
        assert status["engine_alive"] and status["state"] in ("Connected", "Syncing")
        assert res.exit_code == {"green": 0, "yellow": 1}[status["indicator"]], res.output
        # `sync now` presses the engine's button and waits for its cycle
        app_db.execute("INSERT INTO tasks (id, system_id, title) VALUES ('c3', 'system-a', 'z')")
        res = runner.invoke(app, ["sync", "now", "--config", str(cfg), "--json"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert report["finished"] and report["by"].startswith("http://127.0.0.1:")
        assert report["queue_depth"] == 0 and report["duration_s"] >= 0
        # (c3 may have gone before the button was pressed: the counts can be 0)
        assert report["pushed"] >= 0 and isinstance(report["tables"], dict)
        res = runner.invoke(app, ["sync", "now", "--config", str(cfg)])
        assert res.exit_code == 0 and "synced by the running engine" in res.output, res.output
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "stopped" in out
        assert backend.info.anon_key not in "".join(lines) + out
        # ... and work on the database directly when no engine runs
        res = runner.invoke(app, ["sync", "status", "--config", str(cfg), "--json"])
        status = json.loads(res.output)
        assert (status["state"], status["queue_depth"]) == ("Stopped", 0)
        assert status["last_sync_at"] is not None
        app_db.execute("INSERT INTO tasks (id, system_id, title) VALUES ('c2', 'system-a', 'y')")
        res = runner.invoke(app, ["sync", "status", "--config", str(cfg)])
        assert "queue depth       1" in res.output, res.output
        res = runner.invoke(app, ["sync", "now", "--config", str(cfg), "--json"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert (report["by"], report["pushed"], report["parked"]) == ("this process", 1, 0)
        assert report["tables"]["tasks"]["pushed"] == 1 and report["conflicts"] == 0
        res = runner.invoke(app, ["sync", "now", "--config", str(cfg)])
        assert res.exit_code == 0 and "synced by this process" in res.output, res.output
        with psycopg.connect(backend.info.dsn, autocommit=True) as pg:
            assert pg.execute("SELECT 1 FROM tasks WHERE id = 'c2'").fetchall()
        res = runner.invoke(app, ["sync", "conflicts", "--config", str(cfg)])
        assert res.exit_code == 0 and "no conflicts" in res.output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
