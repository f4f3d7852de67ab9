"""`sync reset`: LocalStore.reset (refusal, backup, cleared state), the CLI, a running engine."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.errors import StoreError
from tablesync.project import Project, load_project
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]


@pytest.fixture
def project() -> Project:
    return load_project(ROOT / "sync.toml")


@pytest.fixture
def store(project: Project, tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore.open(project, tmp_path / "app.db", conflict_log=tmp_path / "c.log")
    yield s
    s.close()


def _app(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def _row(rid: str, hlc: int) -> dict[str, Any]:
    return {"id": rid, "system_id": "system-a", "name": "server", "_ts_hlc": hlc,
            "_ts_origin": "system-b", "_ts_deleted": False, "_ts_base_hlc": 0,
            "_ts_base_origin": "", "_ts_seq": 1, "_ts_xid": 1}


def _acked_and_pending(store: LocalStore, db: Path) -> None:
    """p1 acknowledged by the server then edited locally; p2 inserted, never synced."""
    a = _app(db)
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p1','system-a','one')")
    store.ack(store.pending(), [{"outcome": "applied"}])
    a.execute("UPDATE projects SET name = 'edited' WHERE id = 'p1'")
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p2','system-a','two')")
    a.close()
    store.set_cursor("projects", 1234, 0)


def test_reset_refuses_while_unsynced_changes_exist(store: LocalStore, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _acked_and_pending(store, db)
    with pytest.raises(StoreError, match=r"2 unsynced change\(s\) to 2 record\(s\).*"
                                         r"--discard-pending"):
        store.reset()
    assert len(store.pending()) == 2
    assert store.get_cursor("projects") == (1234, 0)
    assert not list(tmp_path.glob("*.jsonl"))


def test_reset_keeps_queue_ids_growing(store: LocalStore, tmp_path: Path) -> None:
    """sync_queue has no AUTOINCREMENT: reset keeps the newest entry (synced) instead."""
    db = tmp_path / "app.db"
    _acked_and_pending(store, db)
    a = _app(db)
    (top,) = a.execute("SELECT max(id) FROM sync_queue").fetchone()
    store.reset(discard_pending=True, backup_dir=tmp_path)
    assert a.execute("SELECT id, synced_at IS NOT NULL FROM sync_queue").fetchall() == [
        (top, 1)]
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p9', 'system-a', 'n')")
    assert a.execute("SELECT max(id) FROM sync_queue").fetchone() == (top + 1,)
    (ch,) = store.pending()
    assert ch.record_id == "p9" and ch.queue_ids == (top + 1,)
    assert ch.state.version.hlc > store.clock - 1 > 0   # stamped after the reset too
    a.close()


def test_reset_discarding_writes_backup_first_then_clears(store: LocalStore,
                                                        tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _acked_and_pending(store, db)
    clock = store.clock
    result = store.reset(discard_pending=True)
    assert result.discarded == 2 and result.removed_rows == 1
    assert result.backup is not None and result.backup.parent == tmp_path
    assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in result.backup.read_text().splitlines()]
    assert [(e["operation"], e["record_id"]) for e in lines] == [("UPDATE", "p1"),
                                                                  ("INSERT", "p2")]
    assert lines[0]["current_row"]["name"] == "edited"
    assert {k: lines[1]["current_row"][k] for k in ("id", "system_id", "name")} == {
        "id": "p2", "system_id": "system-a", "name": "two"}
    assert all(e["table_name"] == "projects" and e["hlc"] > 0 for e in lines)
    # queue, versions and cursors cleared; the never-synced insert removed without echo
    a = _app(db)
    assert a.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL").fetchone() == (0,)
    assert a.execute("SELECT count(*) FROM sync_queue").fetchone() == (1,)  # the newest
    assert a.execute("SELECT count(*) FROM _tablesync_meta").fetchone() == (0,)
    assert a.execute("SELECT id FROM projects").fetchall() == [("p1",)]
    assert store.get_cursor("projects") == (0, 0)
    assert store.clock >= clock                  # the clock never goes back
    # the next catch-up overwrites the locally edited row with the server's
    store.apply_remote("projects", [_row("p1", 5 << 16)])
    assert a.execute("SELECT name FROM projects").fetchall() == [("server",)]
    assert store.pending() == []
    # new local writes queue again, stamped above everything seen before
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p3','system-a','3')")
    (new,) = store.pending()
    assert new.record_id == "p3" and new.state.version.hlc > clock
    a.close()


def test_reset_without_pending_needs_no_flag_and_writes_no_backup(store: LocalStore,
                                                                tmp_path: Path) -> None:
    a = _app(tmp_path / "app.db")
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p1','system-a','one')")
    store.ack(store.pending(), [{"outcome": "applied"}])
    store.set_cursor("projects", 99, 0)
    result = store.reset()
    assert (result.discarded, result.backup, result.removed_rows) == (0, None, 0)
    assert store.get_cursor("projects") == (0, 0)
    assert a.execute("SELECT id FROM projects").fetchall() == [("p1",)]
    a.close()


def _local_config(tmp: Path, port: bool = False) -> Path:
    cfg = tmp / "sync.toml"
    cfg.write_text(
        f'[system]\nid = "system-a"\ndatabase = "{tmp}/a.db"\n'
        + ('[status]\nport = 0\n' if port else '')
        + f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp}/auth.json"\n'
        f'conflict_log = "{tmp}/conflicts.log"\n[tables.projects]' + TABLES)
    return cfg


def _queue_one(project: Project) -> None:
    LocalStore.open(project).close()
    a = _app(project.config.database_path)
    a.execute("INSERT INTO projects (id, system_id, name) VALUES ('p1','system-a','one')")
    a.close()


def test_cli_reset_refuses_then_discards_with_backup(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path)
    _queue_one(load_project(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["sync", "reset", "--config", str(cfg), "--yes"])
    assert res.exit_code == 1 and "1 unsynced change(s)" in res.output
    res = runner.invoke(app, ["sync", "reset", "--config", str(cfg)], input="n\n")
    assert res.exit_code != 0 and not list(tmp_path.glob("*.jsonl"))
    res = runner.invoke(app, ["sync", "reset", "--config", str(cfg), "--yes",
                              "--discard-pending"])
    assert res.exit_code == 0, res.output
    (backup,) = tmp_path.glob("a.db.reset-*.jsonl")
    assert str(backup) in res.output and "no running engine" in res.output
    assert json.loads(backup.read_text())["record_id"] == "p1"


def test_cli_reset_goes_through_the_running_engine(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path, port=True)
    project = load_project(cfg)
    _queue_one(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        control = tmp_path / "a.db.engine.json"
        deadline = time.monotonic() + 20
        while not control.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        runner = CliRunner()
        res = runner.invoke(app, ["sync", "reset", "--config", str(cfg), "--yes"])
        assert res.exit_code == 1 and "refused the reset" in res.output
        assert "1 unsynced change(s)" in res.output
        res = runner.invoke(app, ["sync", "reset", "--config", str(cfg), "--yes",
                                  "--discard-pending"])
        assert res.exit_code == 0, res.output
        assert "by the running engine" in res.output
        (backup,) = tmp_path.glob("a.db.reset-*.jsonl")
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    finally:
        proc.terminate()
        proc.wait(20)
    a = _app(tmp_path / "a.db")
    assert a.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL").fetchone() == (0,)
    a.close()
