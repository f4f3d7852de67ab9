"""tablesync.parked through LocalStore: list with reasons, retry, drop with a 0600 backup."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest

from tablesync.errors import StoreError
from tablesync.parked import PULL, PUSH
from tablesync.project import Project, load_project
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
BIG = 117721298593447936  # beyond JavaScript's exact integers: must come back exactly


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


def _server_row(rid: str, hlc: int) -> dict[str, Any]:
    return {"id": rid, "system_id": "system-a", "name": "server", "_ts_hlc": hlc,
            "_ts_origin": "system-b", "_ts_deleted": False, "_ts_base_hlc": 0,
            "_ts_base_origin": "", "_ts_seq": 1, "_ts_xid": 1}


def _park_new(store: LocalStore, db: Path, rid: str = "p1") -> None:
    a = _app(db)
    a.execute("INSERT INTO projects (id, system_id, name) VALUES (?, 'system-a', 'mine')",
              (rid,))
    a.close()
    store.stamp()
    store.park("projects", rid, "permission denied (42501) for projects")


def test_lists_parked_pushes_and_refused_pulls_with_reasons(store: LocalStore,
                                                             tmp_path: Path) -> None:
    _park_new(store, tmp_path / "app.db")
    store.refuse("projects", "p9", "version beyond the clock bound", _server_row("p9", BIG))
    records = store.parked_records()
    assert [(r.kind, r.table, r.record_id) for r in records] == [
        (PUSH, "projects", "p1"), (PULL, "projects", "p9")]
    push, pull = records
    assert push.reason.startswith("permission denied") and push.pending == 1
    assert push.row is not None and push.row["name"] == "mine"
    assert push.version is not None and int(push.version) > 0
    assert pull.reason == "version beyond the clock bound" and pull.tries == 1
    assert push.since.endswith("Z") and "T" in push.since
    assert pull.version == str(BIG)                      # a string, exact
    assert json.loads(json.dumps(pull.to_dict()))["version"] == "117721298593447936"


def test_retry_releases_a_parked_push_for_the_next_push(store: LocalStore,
                                                        tmp_path: Path) -> None:
    _park_new(store, tmp_path / "app.db")
    assert not store.pending()                   # held back while parked
    assert store.retry_parked("projects", "p1") == 1
    assert store.parked_records() == []
    assert [c.record_id for c in store.pending()] == ["p1"]


def test_retry_of_a_refused_pull_resets_its_tries(store: LocalStore) -> None:
    store.refuse("projects", "p9", "constraint", _server_row("p9", 5))
    store.refuse("projects", "p9", "constraint", _server_row("p9", 5))
    assert store.parked_records()[0].tries == 2
    assert store.retry_parked("projects", "p9", kind=PULL) == 1
    assert store.parked_records()[0].tries == 0          # still listed: the catch-up retries it


def test_retry_refuses_what_cannot_be_retried(store: LocalStore) -> None:
    with pytest.raises(StoreError, match="no parked record projects 'nope'"):
        store.retry_parked("projects", "nope")
    store.refuse("projects", "p8", "response too large", None)
    with pytest.raises(StoreError, match="projects 'p8' kept no image"):
        store.retry_parked("projects", "p8")
    with pytest.raises(StoreError, match="kind must be one of"):
        store.retry_parked("projects", "p8", kind="sideways")


def test_drop_backs_up_then_discards_a_never_acknowledged_insert(store: LocalStore,
                                                                 tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _park_new(store, db)
    path = store.drop_parked("projects", "p1", backup_dir=tmp_path / "bk")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["table"] == "projects" and saved["record_id"] == "p1"
    assert saved["records"][0]["reason"].startswith("permission denied")
    assert saved["queue_entries"][0]["operation"] == "INSERT"
    assert saved["local_row"]["name"] == "mine"
    assert store.parked_records() == [] and not store.pending()
    a = _app(db)
    assert a.execute("SELECT count(*) FROM projects").fetchone() == (0,)
    # the delete was sync's own: nothing new queued
    assert a.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL").fetchone() == (0,)
    a.close()


def test_drop_keeps_the_local_row_the_server_holds(store: LocalStore, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    store.apply_remote("projects", [_server_row("p1", 10)])
    a = _app(db)
    a.execute("UPDATE projects SET name = 'edited' WHERE id = 'p1'")
    a.close()
    store.stamp()
    store.park("projects", "p1", "row-level security")
    store.drop_parked("projects", "p1", backup_dir=tmp_path)
    a = _app(db)
    assert a.execute("SELECT name FROM projects WHERE id = 'p1'").fetchone() == ("edited",)
    a.close()
    assert not store.pending() and store.parked_records() == []


def test_drop_of_a_refused_pull_and_the_default_backup_folder(store: LocalStore,
                                                              tmp_path: Path) -> None:
    store.refuse("projects", "p9", "constraint", _server_row("p9", BIG))
    path = store.drop_parked("projects", "p9")
    assert path.parent == tmp_path                       # next to the database
    assert json.loads(path.read_text())["records"][0]["row"]["_ts_hlc"] == BIG
    assert store.parked_records() == []
    with pytest.raises(StoreError, match="no parked record projects 'p9'"):
        store.drop_parked("projects", "p9")


def test_a_failed_backup_drops_nothing(store: LocalStore, tmp_path: Path) -> None:
    _park_new(store, tmp_path / "app.db")
    blocker = tmp_path / "file"
    blocker.write_text("")                               # a file where the folder should be
    with pytest.raises(StoreError, match="nothing was dropped"):
        store.drop_parked("projects", "p1", backup_dir=blocker / "sub")
    assert [r.record_id for r in store.parked_records()] == ["p1"]


def test_drop_and_retry_touch_only_their_record(store: LocalStore, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _park_new(store, db, "p1")
    _park_new(store, db, "p2")
    store.refuse("projects", "p1", "constraint", _server_row("p1", 7))   # p1 both ways
    store.drop_parked("projects", "p1", backup_dir=tmp_path, kind=PUSH)
    assert [(r.kind, r.record_id) for r in store.parked_records()] == [
        (PUSH, "p2"), (PULL, "p1")]
    assert store.retry_parked("projects", "p1") == 1                      # the pull only
    assert [(r.kind, r.record_id) for r in store.parked_records()] == [
        (PUSH, "p2"), (PULL, "p1")]
    with sqlite3.connect(db) as a:
        assert a.execute("SELECT id FROM projects ORDER BY id").fetchall() == [("p2",)]
