"""LocalStore.apply_exits: records that left this system's scope on the server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tablesync.model import Op
from tablesync.project import Project, load_project
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
NOW = 1 << 50                                   # an hlc well above anything local


@pytest.fixture
def store(tmp_path: Path) -> Any:
    project: Project = load_project(ROOT / "sync.toml")
    s = LocalStore.open(project, tmp_path / "app.db", conflict_log=tmp_path / "conflicts.log")
    yield s
    s.close()


def _app(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "app.db", isolation_level=None)


def _task(rid: str, hlc: int, origin: str = "server", **data: Any) -> dict[str, Any]:
    return {"id": rid, "system_id": "system-a", "project_id": None, "title": "remote",
            "status": "pending", "priority": 0, "payload": None, "updated_at": None,
            **data, "_ts_hlc": hlc, "_ts_origin": origin, "_ts_deleted": False,
            "_ts_base_hlc": 0, "_ts_base_origin": "", "_ts_seq": 1, "_ts_xid": 1}


def _exit(rid: str, hlc: int, table: str = "tasks", origin: str = "server") -> dict[str, Any]:
    return {"id": 1, "table_name": table, "record_id": rid, "scope": "system-a",
            "_ts_hlc": hlc, "_ts_origin": origin, "_ts_seq": 2, "_ts_xid": 2}


def _queue(tmp_path: Path) -> list[tuple[Any, ...]]:
    return _app(tmp_path).execute("SELECT record_id, synced_at IS NOT NULL, last_error FROM "
                                  "sync_queue ORDER BY id").fetchall()


def test_a_pulled_record_that_left_is_removed_without_queueing(store: LocalStore,
                                                               tmp_path: Path) -> None:
    store.apply_remote("tasks", [_task("t1", NOW), _task("t2", NOW)])
    removed, rejected = store.apply_exits([_exit("t1", NOW + 5)])
    assert rejected == [] and [(c.table, c.record_id, c.op) for c in removed] == [
        ("tasks", "t1", Op.DELETE)]
    assert removed[0].state.deleted and removed[0].state.data["title"] == "remote"
    app = _app(tmp_path)
    assert app.execute("SELECT id FROM tasks").fetchall() == [("t2",)]
    assert app.execute("SELECT count(*) FROM sync_queue").fetchone() == (0,)   # echo guard
    assert app.execute("SELECT record_id FROM _tablesync_meta").fetchall() == [("t2",)]
    # idempotent: the catch-up and Realtime may both deliver it
    assert store.apply_exits([_exit("t1", NOW + 5)]) == ([], [])
    # the record moving back later is a new record for this system
    applied = store.apply_remote("tasks", [_task("t1", NOW + 9, title="back")])
    assert [c.op for c in applied] == [Op.INSERT]
    assert app.execute("SELECT title FROM tasks WHERE id = 't1'").fetchone() == ("back",)


def test_an_exit_older_than_the_stored_version_is_ignored(store: LocalStore,
                                                          tmp_path: Path) -> None:
    # moved away (exit at NOW + 5) and back (NOW + 9): the return was pulled first
    store.apply_remote("tasks", [_task("t1", NOW + 9)])
    assert store.apply_exits([_exit("t1", NOW + 5)]) == ([], [])
    assert _app(tmp_path).execute("SELECT id FROM tasks").fetchall() == [("t1",)]


def test_local_changes_of_a_record_that_left_are_logged_not_lost(store: LocalStore,
                                                                 tmp_path: Path) -> None:
    store.apply_remote("tasks", [_task("t1", NOW)])
    app = _app(tmp_path)
    app.execute("UPDATE tasks SET title = 'edited offline' WHERE id = 't1'")
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('mine', 'system-a', 'x')")
    removed, _ = store.apply_exits([_exit("t1", NOW + 5)])
    assert [c.record_id for c in removed] == ["t1"]
    assert app.execute("SELECT id FROM tasks").fetchall() == [("mine",)]
    queue = _queue(tmp_path)
    assert queue[0][:2] == ("t1", 1) and "left this system's scope" in queue[0][2]
    assert queue[1] == ("mine", 0, None)
    assert [c.record_id for c in store.pending()] == ["mine"]
    (conflict,) = store.conflicts()
    assert conflict["record_id"] == "t1" and "left this system's scope" in conflict["reason"]
    assert conflict["loser"]["data"]["title"] == "edited offline"     # kept, not lost
    (line,) = (tmp_path / "conflicts.log").read_text().splitlines()
    assert json.loads(line)["loser"]["data"]["title"] == "edited offline"


def test_malformed_exit_rows_are_rejected_one_by_one(store: LocalStore,
                                                     tmp_path: Path) -> None:
    store.apply_remote("tasks", [_task("t1", NOW)])
    bad = ["not an object", _exit("t1", NOW + 5, table="nope"), {**_exit("", NOW + 5)},
           {**_exit("t1", NOW + 5), "_ts_hlc": True}, {**_exit("t1", NOW + 5), "_ts_hlc": "9"},
           {**_exit("t1", NOW + 5), "_ts_origin": None}]
    removed, rejected = store.apply_exits([*bad, _exit("t1", NOW + 5)])
    assert [c.record_id for c in removed] == ["t1"]
    assert len(rejected) == len(bad)
    assert "row 1: table_name 'nope' is not a synced table" in rejected[1]
    assert "record_id" in rejected[2] and "malformed version" in rejected[3]
    assert all(msg.startswith("tablesync_exits row ") for msg in rejected)
