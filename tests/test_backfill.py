"""tablesync.backfill on real sqlite3: which rows pre-exist, chunking in key and table order,
waiting for the chunk in flight, other scopes, progress, and what the ack does with them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from tablesync.model import BACKFILL_HLC, ApplyOutcome, Outcome
from tablesync.outbox import BACKFILL_REASON
from tablesync.project import Project, load_project
from tablesync.rows import row_from_state
from tablesync.status import StatusSnapshot, backfill_lines, indicator, progress_bar
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project() -> Project:
    return load_project(ROOT / "sync.toml")


def _app(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "app.db", isolation_level=None)


@pytest.fixture
def store(project: Project, tmp_path: Path) -> Iterator[LocalStore]:
    """A store opened on an app database that already holds rows (no triggers yet)."""
    app = _app(tmp_path)
    for t in ("projects", "tasks", "results"):
        app.execute((ROOT / "schemas" / f"{t}.sql").read_text())
    app.executemany("INSERT INTO projects (id, system_id, name) VALUES (?, ?, 'n')",
                    [(f"p{i}", "system-a") for i in range(5)] + [("q0", "system-b"),
                                                                   ("q1", "system-c")])
    app.executemany("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 't')",
                    [(f"t{i}",) for i in range(3)])
    app.close()
    s = LocalStore.open(project, tmp_path / "app.db", conflict_log=tmp_path / "c.log")
    yield s
    s.close()


def _ack_all(store: LocalStore) -> list[str]:
    pending = list(store.pending())
    store.ack(pending, [ApplyOutcome(c.record_id, Outcome.APPLIED, None, None)
                        for c in pending])
    return [c.record_id for c in pending]


def test_pre_existing_rows_are_queued_in_chunks_table_by_table(
        store: LocalStore, tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.execute("INSERT INTO projects (id, system_id, name) VALUES ('new', 'system-a', 'n')")
    assert store.backfilling
    assert store.backfill_step(limit=2) == 2
    pending = list(store.pending())
    backfilled = sorted(c.record_id for c in pending if c.state.version.hlc == BACKFILL_HLC)
    assert backfilled == ["p0", "p1"]           # key order; 'new' has its own entry
    assert all(c.state.data["name"] == "n" for c in pending)
    assert store.backfill_step(limit=2) == 0    # the chunk in flight is not settled yet
    assert sorted(_ack_all(store)) == ["new", "p0", "p1"]
    assert store.backfill_step(limit=2) == 2    # p2, p3
    _ack_all(store)
    assert store.backfill_step(limit=2) == 1    # p4 ('new' has a version now)
    _ack_all(store)
    assert store.backfill_step(limit=2) == 2    # projects finished; tasks t0, t1
    assert {c.table for c in store.pending()} == {"tasks"}
    _ack_all(store)
    assert store.backfill_step(limit=2) == 1    # t2
    _ack_all(store)
    assert store.backfill_step(limit=2) == 0 and not store.backfilling
    progress = store.backfill_progress()
    assert progress["projects"]["done"] == progress["projects"]["total"] == 5
    assert progress["projects"]["other_scope"] == 2
    assert progress["projects"]["other_keys"] == ["q0", "q1"] 
    assert progress["tasks"]["finished"] and progress["results"]["total"] == 0
    # other scopes were never queued, and never will be
    assert app.execute("SELECT count(*) FROM sync_queue WHERE record_id IN ('q0', 'q1')"
                       ).fetchone() == (0,)


def test_progress_while_running_and_the_status_lines(store: LocalStore) -> None:
    assert store.backfill_step(limit=3) == 3
    b = store.backfill_progress()["projects"]
    assert (b["done"], b["total"], b["finished"]) == (0, 5, False)
    _ack_all(store)
    b = store.backfill_progress()["projects"]
    assert b["done"] == 3 and b["rate"] > 0 and b["eta_s"] is not None
    assert progress_bar("projects", b, width=10).startswith(
        "backfill projects [######....] 3/5 rows")
    snap = StatusSnapshot(system_id="a", state="Connected", engine_alive=True, queue_depth=0,
                          backfill={"projects": b})
    assert indicator(snap) == "yellow"          # not "All changes synced" while it runs
    lines = backfill_lines(snap)
    assert lines[0].startswith("projects: 3/5 pre-existing rows pushed")
    assert "2 row(s) of other systems' scope not synced (q0, q1)" in lines[0]
    held = StatusSnapshot(system_id="a", state="Connected", engine_alive=True, queue_depth=0,
                          server_behind={"tasks": "the server's table tasks lacks notes"})
    assert indicator(held) == "red"


def test_a_server_copy_wins_and_a_difference_is_logged(store: LocalStore,
                                                        tmp_path: Path) -> None:
    assert store.backfill_step(limit=3) == 3
    changes = {c.record_id: c for c in store.pending()}
    server = {rid: {**row_from_state(c.state), "_ts_hlc": 5 << 16, "_ts_origin": "server",
                    "_ts_seq": 1, "_ts_xid": 1} for rid, c in changes.items()}
    server["p0"]["name"] = "server name"        # differs; p1 is the same; p2 is absent
    outcomes = [ApplyOutcome("p0", Outcome.SUPERSEDED, server["p0"], None),
                ApplyOutcome("p1", Outcome.SUPERSEDED, server["p1"], None),
                ApplyOutcome("p2", Outcome.APPLIED, None, None)]
    store.ack([changes["p0"], changes["p1"], changes["p2"]], outcomes)
    app = _app(tmp_path)
    assert app.execute("SELECT name FROM projects WHERE id = 'p0'").fetchone() == (
        "server name",)
    conflicts = store.conflicts(10)
    assert [(c["record_id"], c["reason"]) for c in conflicts] == [("p0", BACKFILL_REASON)]
    (line,) = (tmp_path / "c.log").read_text().splitlines()
    entry = json.loads(line)
    assert (entry["loser"]["data"]["name"], entry["winner"]["data"]["name"]) == (
        "n", "server name")
    assert app.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL"
                       ).fetchone() == (0,)


def test_a_reopened_store_resumes_without_queueing_twice(
        project: Project, store: LocalStore, tmp_path: Path) -> None:
    assert store.backfill_step(limit=2) == 2
    store.close()
    again = LocalStore.open(project, tmp_path / "app.db")
    try:
        assert again.backfilling
        assert again.backfill_step(limit=2) == 0        # the chunk is still in the queue
        assert sorted(_ack_all(again)) == ["p0", "p1"]
        assert again.backfill_step(limit=2) == 2
        assert sorted(c.record_id for c in again.pending()) == ["p2", "p3"]
    finally:
        again.close()


def test_sync_status_lists_backfill_and_other_scopes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    from tablesync.cli import app
    from tablesync.cliutil import BackfillProgress

    cfg = tmp_path / "sync.toml"
    cfg.write_text((ROOT / "sync.toml").read_text()
                   .replace('database = "data/system-a.db"',
                            f'database = "{tmp_path / "app.db"}"')
                   .replace('schemas = "schemas"', f'schemas = "{ROOT / "schemas"}"'))
    project = load_project(cfg)
    app_db = _app(tmp_path)
    app_db.execute((ROOT / "schemas" / "projects.sql").read_text())
    app_db.executemany("INSERT INTO projects (id, system_id, name) VALUES (?, ?, 'n')",
                       [("p0", "system-a"), ("p1", "system-a"), ("q0", "system-b")])
    store = LocalStore.open(project)
    try:
        with BackfillProgress(store.backfill_progress, every=60) as bar:
            assert store.backfill_step(limit=1) == 1
            bar.show()
        bars = capsys.readouterr().out.splitlines()
        printed = [line for line in CliRunner().invoke(
            app, ["sync", "status", "--config", str(cfg)]).output.splitlines()
            if line.startswith("backfill")]
    finally:
        store.close()
    assert bars == ["backfill projects [........................] 0/2 rows, 0.0 rows/s, ETA ?"]
    assert printed == ["backfill          projects: 0/2 pre-existing rows pushed, 0.0 rows/s; "
                       "1 row(s) of other systems' scope not synced (q0)"]


def test_a_server_tombstone_wins_over_a_pre_existing_row_and_is_logged(
        store: LocalStore, tmp_path: Path) -> None:
    assert store.backfill_step(limit=1) == 1
    (change,) = list(store.pending())
    tomb = {**row_from_state(change.state), "_ts_hlc": 7 << 16, "_ts_origin": "server",
            "_ts_deleted": True, "_ts_base_hlc": 6 << 16, "_ts_base_origin": "server",
            "_ts_seq": 1, "_ts_xid": 1}
    store.ack([change], [ApplyOutcome("p0", Outcome.SUPERSEDED, tomb, None)])
    assert _app(tmp_path).execute("SELECT count(*) FROM projects WHERE id = 'p0'"
                                  ).fetchone() == (0,)
    (conflict,) = store.conflicts(10)
    assert conflict["reason"] == BACKFILL_REASON and conflict["loser"]["data"]["name"] == "n"
