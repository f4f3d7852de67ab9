"""docs/quickstart.md part 3 ("An existing app"), step by step, on the real stack.

The schema file and sync.toml are read from the quickstart itself. The Supabase project
is the devserver on the suite's PostgreSQL; `supabase db push` is done the way the CLI
does it (the CLI is not installed here): every new file of supabase/migrations/ in
file-name order, each in its own transaction. `tablesync run` runs as a real process.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.devserver.server import DevServer

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pw-shop-1-quickstart"


def _section() -> str:
    text = (ROOT / "docs" / "quickstart.md").read_text()
    return text.split("## 3. An existing app", 1)[1]


def _block(lang: str) -> str:
    found = re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)
    assert len(found) == 1, f"one ```{lang} block expected in quickstart part 3"
    return str(found[0])


def _db_push(dsn: str, files: list[Path], done: set[Path]) -> None:
    for f in sorted(files, key=lambda p: p.name):
        if f not in done:
            with psycopg.connect(dsn) as conn:
                conn.execute(f.read_text().encode())
            done.add(f)


def _cli(*args: str, input: str | None = None) -> str:
    res = CliRunner().invoke(app, list(args), input=input)
    assert res.exit_code == 0, res.output
    return res.output


def test_existing_app_end_to_end(pg_dsn: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # the app, before tablesync: its own database with rows, rollback journal
    app_db = tmp_path / "app.db"
    conn = sqlite3.connect(app_db, isolation_level=None, timeout=30)
    conn.execute(_block("sql"))
    conn.executemany("INSERT INTO notes (id, system_id, body) VALUES (?, 'shop-1', ?)",
                     [("old-1", "first"), ("old-2", "second")])
    backup = sqlite3.connect(tmp_path / "app-before-tablesync.db")
    conn.backup(backup)                       # what `sqlite3 app.db ".backup ..."` does
    backup.close()
    conn.close()
    # declare the table and sync.toml exactly as the quickstart shows them
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "notes.sql").write_text(_block("sql"))
    cfg = tmp_path / "sync.toml"
    cfg.write_text(_block("toml"))

    out = _cli("generate", "--config", str(cfg), "--out", str(tmp_path / "generated"))
    assert "switched the journal mode from delete to WAL" in out
    assert "created table(s) sync_queue" in out
    assert "installed capture triggers on notes" in out
    files = sorted((tmp_path / "supabase" / "migrations").glob("*.sql"))
    assert len(files) == 1 and files[0].name.endswith("_tablesync_init.sql")

    pushed: set[Path] = set()
    _db_push(pg_dsn, files, pushed)           # supabase db push
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    proc = None
    try:
        info = srv.info
        for key, value in (("URL", info.url), ("ANON_KEY", info.anon_key),
                           ("EMAIL", "shop-1@example.com")):
            monkeypatch.setenv(f"TABLESYNC_SUPABASE__{key}", value)
        monkeypatch.setenv("TABLESYNC_SUPABASE__SERVICE_KEY", info.service_key)
        _cli("provision", "--config", str(cfg), "--system-id", "shop-1", "--email",
             "shop-1@example.com", input=PASSWORD + "\n")
        monkeypatch.delenv("TABLESYNC_SUPABASE__SERVICE_KEY")
        _cli("login", "--config", str(cfg), input=PASSWORD + "\n")

        env = dict(os.environ, PYTHONPATH=str(ROOT), TABLESYNC_SYNC__DEBOUNCE="0.01")
        proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config",
                                 str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("state: connected") or not line:
                break
        assert lines[-1].startswith("state: connected"), "".join(lines)
        # generate migrated the database already: run has nothing to announce
        assert not any(line.startswith("changed ") for line in lines), "".join(lines)
        conn = sqlite3.connect(app_db, isolation_level=None, timeout=30)
        conn.execute("INSERT INTO notes (id, system_id, body) VALUES ('new-1', 'shop-1', 'x')")
        with psycopg.connect(pg_dsn, autocommit=True) as pg:
            deadline = time.monotonic() + 15
            while not pg.execute("SELECT 1 FROM notes WHERE id = 'new-1'").fetchall():
                assert time.monotonic() < deadline, "the app's write was not pushed"
                time.sleep(0.05)
            # the rows the app held before tablesync: backfilled by the first run
            while pg.execute("SELECT count(*) FROM notes WHERE id LIKE 'old-%'"
                             ).fetchone() != (2,):
                assert time.monotonic() < deadline, "pre-existing rows were not backfilled"
                time.sleep(0.05)
            assert pg.execute("SELECT id, body FROM notes WHERE id LIKE 'old-%' ORDER BY id"
                              ).fetchall() == [("old-1", "first"), ("old-2", "second")]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert conn.execute("SELECT id, body FROM notes WHERE id LIKE 'old-%' ORDER BY id"
                            ).fetchall() == [("old-1", "first"), ("old-2", "second")]

        # change the schema later: a nullable column, the server first
        schema = tmp_path / "schemas" / "notes.sql"
        schema.write_text(schema.read_text().replace("updated_at TEXT",
                                                     "updated_at TEXT,\n    tags TEXT"))
        out = _cli("generate", "--config", str(cfg), "--out", str(tmp_path / "generated"))
        assert "added column notes.tags" in out
        files = sorted((tmp_path / "supabase" / "migrations").glob("*.sql"))
        assert files[-1].name.endswith("_tablesync_add_column_notes_tags.sql")
        _db_push(pg_dsn, files, pushed)
        with psycopg.connect(pg_dsn, autocommit=True) as pg:
            assert pg.execute("SELECT tags FROM notes WHERE id = 'new-1'").fetchall() == [
                (None,)]
        assert conn.execute("SELECT tags FROM notes WHERE id = 'old-1'").fetchall() == [
            (None,)]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.stop()
