"""Issue 15: adopting tablesync on an app database that already holds data, on the real
stack (devserver + PostgreSQL + engine).

* rows that exist before tablesync is installed (and rows of a table added to sync.toml
  later) are pushed by the backfill; a copy the server already holds is kept (and a
  difference logged); rows of other scopes are counted and listed, not queued; a crash
  between the server's apply and the local acknowledgement duplicates nothing;
* a server behind the project (a column added locally before the server's migration, a
  whole table missing) holds that table's pushes, says so once, keeps every value, and
  pushes them when the server has caught up.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tablesync import backfill
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.outbox import BACKFILL_REASON
from tablesync.project import load_project
from tablesync.remote.rest import RestRemote
from tablesync.rows import row_from_state
from tablesync.session import Session
from tablesync.sql import postgres
from tablesync.status import backfill_lines, progress_bar
from tablesync.vault import Secret, Vault

from .stack import ROOT, create_users, email, password, pg, wait_for

pytestmark = pytest.mark.postgres

A = "system-a"
TABLE_OPTIONS = {"projects": "priority = 0",
                 "tasks": 'priority = 1\non_delete_conflict = "edit-wins"',
                 "results": 'priority = 2\non_delete_conflict = "last-write-wins"'}


def _schemas(tmp: Path, *, notes: bool = False) -> Path:
    """A copy of the example schemas (tasks with an extra nullable ``notes`` column)."""
    out = tmp / ("schemas-notes" if notes else "schemas")
    if not out.exists():
        shutil.copytree(ROOT / "schemas", out)
        if notes:
            sql = (out / "tasks.sql").read_text().replace(
                "updated_at TEXT", "updated_at TEXT,\n    notes TEXT")
            (out / "tasks.sql").write_text(sql)
    return out


def _config(tmp: Path, info: DevServerInfo | None, tables: tuple[str, ...], *,
            notes: bool = False) -> Path:
    name = "-".join([*tables, *(["notes"] if notes else []), *([] if info else ["srv"])])
    cfg = tmp / f"sync-{name}.toml"
    remote = "" if info is None else (f'[supabase]\nurl = "{info.url}"\nanon_key = '
                                      f'"{info.anon_key}"\nemail = "{email(A)}"\n')
    blocks = "".join(f'\n[tables.{t}]\nschema = "{t}.sql"\nprimary_key = "id"\n'
                     f'scope = "system_id"\n{TABLE_OPTIONS[t]}\n' for t in tables)
    cfg.write_text(
        f'[system]\nid = "{A}"\ndatabase = "{tmp / "app.db"}"\n'
        + remote +
        "[sync]\ninterval = 1.0\ndebounce = 0.01\npoll_interval = 2.0\nrealtime = false\n"
        f'[paths]\nschemas = "{_schemas(tmp, notes=notes)}"\n'
        f'token_store = "{tmp / "auth.json"}"\nconflict_log = "{tmp / "conflicts.log"}"\n'
        + blocks)
    return cfg


def _engine(tmp: Path, info: DevServerInfo, tables: tuple[str, ...], *,
            notes: bool = False) -> Engine:
    project = load_project(_config(tmp, info, tables, notes=notes))
    remote = RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(tmp / "auth.json"), project=info.url, email=email(A),
                      password=Secret(password(A)))
    remote.tokens = session
    return Engine(project, remote=remote, session=session, own_remote=True)


def _server_schema(dsn: str, tmp: Path, tables: tuple[str, ...], *,
                   notes: bool = False) -> None:
    """Apply the generated supabase.sql of a project with ``tables`` (idempotent)."""
    project = load_project(_config(tmp, None, tables, notes=notes))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())


@pytest.fixture
def stack(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[DevServer, Path]]:
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    try:
        yield srv, tmp_path
    finally:
        srv.stop()


def _app(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "app.db", isolation_level=None, timeout=30)


def _unsettled(app: sqlite3.Connection) -> tuple[int, int]:
    (pending,) = app.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL"
                             ).fetchone()
    (parked,) = app.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
    return pending, parked


def test_existing_rows_and_a_table_added_later_are_backfilled(
        stack: tuple[DevServer, Path], pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, tmp = stack
    info = srv.info
    _server_schema(pg_dsn, tmp, ("projects", "tasks", "results"))
    create_users(info, (A,))
    monkeypatch.setattr(backfill, "BACKFILL_CHUNK", 300)      # several chunks of 1,000 rows
    # the app's database before tablesync: plain tables, 1,000 rows of this system and 5
    # of another one (a shared database), no triggers, no sync tables
    app = _app(tmp)
    for t in ("projects", "tasks", "results"):
        app.execute((ROOT / "schemas" / f"{t}.sql").read_text())
    app.executemany("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                    [(f"t{i:04d}", A, f"local {i}") for i in range(1000)]
                    + [(f"x{i}", "system-b", "not ours") for i in range(5)])
    app.executemany("INSERT INTO results (id, system_id, task_id, output) VALUES (?, ?, ?, ?)",
                    [(f"r{i}", A, f"t{i:04d}", f"out {i}") for i in range(3)])
    # the server already holds two of the records: one differs, one is the same
    pg(pg_dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('t0005', %s, 'server copy'),"
               " ('t0006', %s, 'local 6')", A, A)

    # crash: the first chunk reached the server, the process died before acknowledging it
    first = _engine(tmp, info, ("projects", "tasks"))
    assert first.store.backfill_step() == 300
    chunk = [c for c in first.store.pending() if c.table == "tasks"]
    assert len(chunk) == 300
    assert first.session is not None and first.remote is not None
    first.session.ensure()
    sent = [c for c in chunk if c.record_id not in ("t0005", "t0006")][:120]
    first.remote.apply("tasks", [row_from_state(c.state) for c in sent])
    first.store.close()                         # killed: no ack, no clean stop
    first.remote.close()

    with _engine(tmp, info, ("projects", "tasks")) as eng:
        progress = eng.store.backfill_progress()["tasks"]
        assert progress["total"] == 1000 and progress["other_scope"] == 5
        assert not progress["finished"]
        assert progress_bar("tasks", progress).startswith("backfill tasks [")
        eng.sync_once()
        snap = eng.snapshot()
    server = dict(pg(pg_dsn, "SELECT id, title FROM tasks"))
    assert len(server) == 1000 and all(k.startswith("t") for k in server)   # no x*, no dup
    assert server["t0005"] == "server copy" and server["t0999"] == "local 999"
    local = dict(app.execute("SELECT id, title FROM tasks").fetchall())
    assert local["t0005"] == "server copy"      # the server's copy was adopted locally
    assert local["x0"] == "not ours"            # other scopes: left alone
    conflicts = app.execute("SELECT record_id, reason, loser FROM _tablesync_conflicts"
                            ).fetchall()
    assert [(rid, why) for rid, why, _ in conflicts] == [("t0005", BACKFILL_REASON)]
    assert json.loads(conflicts[0][2])["data"]["title"] == "local 5"
    assert _unsettled(app) == (0, 0)
    b = snap.backfill["tasks"]
    assert b["finished"] and b["done"] == b["total"] == 1000
    assert b["other_scope"] == 5 and b["other_keys"] == [f"x{i}" for i in range(5)]
    assert snap.parked == 0 and snap.indicator != "red"
    assert any("5 row(s) of other systems' scope" in line and "x0" in line
               for line in backfill_lines(snap))
    # nothing is pushed twice by later runs
    versions = pg(pg_dsn, "SELECT count(*) FROM tasks WHERE _ts_hlc = 1")
    assert versions == [(998,)]

    # a table added to sync.toml later: its 3 pre-existing rows are pushed by the next run
    assert pg(pg_dsn, "SELECT count(*) FROM results") == [(0,)]
    with _engine(tmp, info, ("projects", "tasks", "results")) as eng:
        eng.sync_once()
        assert eng.snapshot().backfill["results"]["done"] == 3
    assert sorted(pg(pg_dsn, "SELECT id, output FROM results")) == [
        ("r0", "out 0"), ("r1", "out 1"), ("r2", "out 2")]
    assert _unsettled(app) == (0, 0)


def test_a_server_behind_holds_the_table_then_catches_up(
        stack: tuple[DevServer, Path], pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    srv, tmp = stack
    info = srv.info
    # the server is behind: tasks without the new column ``notes``, no results table
    _server_schema(pg_dsn, tmp, ("projects", "tasks"))
    create_users(info, (A,))
    tables = ("projects", "tasks", "results")
    eng = _engine(tmp, info, tables, notes=True)
    try:
        app = _app(tmp)
        app.execute("INSERT INTO projects (id, system_id, name) VALUES ('p1', ?, 'p')", (A,))
        app.executemany("INSERT INTO tasks (id, system_id, project_id, title, notes) "
                        "VALUES (?, ?, 'p1', ?, ?)",
                        [(f"t{i}", A, f"task {i}", f"note {i}") for i in range(5)])
        app.execute("INSERT INTO results (id, system_id, task_id, output) "
                    "VALUES ('r1', ?, 't1', 'out')", (A,))
        # a dashboard write the replica will pull while the server lacks the column
        pg(pg_dsn, "INSERT INTO tasks (id, system_id, title) VALUES ('srv', %s, 'from server')",
           A)
        with caplog.at_level(logging.INFO, logger="tablesync"):
            eng.sync_once()
            eng.sync_once()
        snap = eng.snapshot()
        assert snap.indicator == "red"
        assert set(snap.server_behind) == {"tasks", "results"}
        assert "notes" in snap.server_behind["tasks"]
        held = [r.getMessage() for r in caplog.records if "are held" in r.getMessage()]
        assert len(held) == 2, held                 # one line per table, not one per row
        assert not [r for r in caplog.records if "missing column" in r.getMessage()]
        assert pg(pg_dsn, "SELECT id FROM projects") == [("p1",)]
        assert pg(pg_dsn, "SELECT id FROM tasks") == [("srv",)]
        # held, not stuck: entries pending, nothing parked, no error stored on them
        assert app.execute("SELECT count(*), count(last_error), max(retry_count) FROM "
                           "sync_queue WHERE synced_at IS NULL").fetchone() == (6, 0, 0)
        assert _unsettled(app)[1] == 0
        assert app.execute("SELECT title, notes FROM tasks WHERE id = 'srv'").fetchone() == (
            "from server", None)
        assert app.execute("SELECT count(*) FROM _tablesync_refused").fetchone() == (0,)

        # the server is migrated: the held rows go out with the new column's values
        caplog.clear()
        _server_schema(pg_dsn, tmp, tables, notes=True)
        with caplog.at_level(logging.INFO, logger="tablesync"):
            eng.sync_once()
        assert sorted(pg(pg_dsn, "SELECT id, notes FROM tasks")) == [
            ("srv", None), *[(f"t{i}", f"note {i}") for i in range(5)]]
        assert pg(pg_dsn, "SELECT id, output FROM results") == [("r1", "out")]
        assert _unsettled(app) == (0, 0)
        snap = wait_for(lambda: (s := eng.snapshot()).server_behind == {} and s,
                        what="the cached snapshot (0.2 s) refreshed")
        assert snap.indicator != "red"
        assert len([r for r in caplog.records if "caught up" in r.getMessage()]) == 2
        # a column value written after the migration goes straight out; both sides agree
        app.execute("UPDATE tasks SET notes = 'later' WHERE id = 'srv'")
        eng.sync_once()
        server = dict(pg(pg_dsn, "SELECT id, notes FROM tasks"))
        local = dict(app.execute("SELECT id, notes FROM tasks").fetchall())
        assert server == local and local["srv"] == "later"
    finally:
        eng.close()
