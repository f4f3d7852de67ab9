"""LocalStore on real sqlite3: capture by plain apps, coalescing, ack, remote apply, conflicts."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tablesync import clock
from tablesync.model import Op, Version
from tablesync.project import Project, load_project
from tablesync.rows import row_from_state
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
SEED_COLUMNS = ["id", "operation", "table_name", "record_id", "record_data", "created_at",
                "synced_at", "retry_count"]


@pytest.fixture
def project() -> Project:
    return load_project(ROOT / "sync.toml")


@pytest.fixture
def store(project: Project, tmp_path: Path) -> Any:
    s = LocalStore.open(project, tmp_path / "app.db", conflict_log=tmp_path / "conflicts.log")
    yield s
    s.close()


def _app(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "app.db", isolation_level=None)


def _projects(conn: sqlite3.Connection, n: int) -> None:
    """The app inserts projects p0 .. p<n-1> (one queue entry each)."""
    for i in range(n):
        conn.execute("INSERT INTO projects (id, system_id, name) VALUES (?, 'system-a', 'n')",
                     (f"p{i}",))


def _server_row(table: str, rid: str, hlc: int, origin: str, deleted: bool = False,
                base: tuple[int, str] = (0, ""), **data: Any) -> dict[str, Any]:
    cols = {"projects": {"system_id": "system-a", "name": "remote"},
            "tasks": {"system_id": "system-a", "title": "remote", "status": "pending"}}[table]
    return {"id": rid, **cols, **data, "_ts_hlc": hlc, "_ts_origin": origin,
            "_ts_deleted": deleted, "_ts_base_hlc": base[0], "_ts_base_origin": base[1],
            "_ts_seq": 1, "_ts_xid": 1}


def test_plain_sqlite_app_fills_sync_queue(store: LocalStore, tmp_path: Path) -> None:
    app = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute(\"INSERT INTO projects (id, system_id, name) VALUES ('p1','system-a','n')\")\n"
        "c.execute(\"UPDATE projects SET name = 'm' WHERE id = 'p1'\")\n"
        "c.execute(\"DELETE FROM projects WHERE id = 'p1'\")\n"
        "c.commit()\n"
        "assert 'tablesync' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", app, str(tmp_path / "app.db")], check=True)
    conn = _app(tmp_path)
    cur = conn.execute("SELECT * FROM sync_queue ORDER BY id")
    names = [d[0] for d in cur.description]
    assert names[:8] == SEED_COLUMNS and "hlc" in names
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    assert [r["operation"] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    assert all(r["table_name"] == "projects" and r["record_id"] == "p1" for r in rows)
    assert all(r["synced_at"] is None and r["retry_count"] == 0 and r["created_at"] for r in rows)
    assert json.loads(rows[2]["record_data"])["name"] == "m"  # DELETE keeps the old image
    # the triggers stamp the wall time; the store turns it into versions before reading
    assert all(r["hlc"] == 0 and isinstance(r["created_at"], float) for r in rows)
    assert [c.op for c in store.pending()] == [Op.DELETE]
    stamped = conn.execute("SELECT hlc, created_at FROM sync_queue ORDER BY id").fetchall()
    hlcs = [h for h, _ in stamped]
    assert hlcs == sorted(set(hlcs)) and hlcs[0] > 0
    assert abs(clock.physical_ms(hlcs[0]) - clock.SystemClock().now_ms()) < 60_000
    wall = datetime.strptime(stamped[0][1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    assert abs(wall.timestamp() * 1000 - clock.physical_ms(hlcs[0])) < 1


def test_apply_remote_enqueues_nothing_and_observes_clock(store: LocalStore,
                                                          tmp_path: Path) -> None:
    future = clock.pack(clock.SystemClock().now_ms() + 3_600_000)
    applied = store.apply_remote("projects", [_server_row("projects", "r1", future, "B")])
    assert [(c.record_id, c.op) for c in applied] == [("r1", Op.INSERT)]
    conn = _app(tmp_path)
    assert conn.execute("SELECT count(*) FROM sync_queue").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM projects").fetchone()[0] == "remote"
    conn.execute("UPDATE projects SET name = 'local'")
    (ch,) = store.pending()
    (hlc,) = conn.execute("SELECT hlc FROM sync_queue").fetchone()
    assert hlc > future  # a write after seeing a future version orders after it
    assert ch.state.base == Version(future, "B") and ch.op is Op.UPDATE


def test_pending_coalesces_and_orders_fk_safe(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'P')")
    conn.execute("INSERT INTO tasks (id, system_id, project_id, title) VALUES "
                 "('t', 'system-a', 'p', 'T')")
    for i in range(5):
        conn.execute("UPDATE tasks SET title = ? WHERE id = 't'", (f"T{i}",))
    conn.execute("INSERT INTO results (id, system_id, task_id) VALUES ('r', 'system-a', 't')")
    conn.execute("INSERT INTO results (id, system_id, task_id) VALUES ('gone', 'system-a', 't')")
    conn.execute("DELETE FROM results WHERE id = 'gone'")
    conn.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t2', 'system-a', 'x')")
    conn.execute("DELETE FROM tasks WHERE id = 't2'")
    changes = store.pending()
    got = [(c.table, c.record_id, c.op) for c in changes]
    # upserts parents before children; 'gone' and 't2' were never acknowledged by the
    # server, so their tombstones may be inserts there: they travel with the upserts,
    # after their table's INSERTs (issue 11 C; deletes of known records come first, see
    # test_deletes_of_known_records_go_first_children_before_parents)
    assert got == [("projects", "p", Op.INSERT), ("tasks", "t", Op.INSERT),
                   ("tasks", "t2", Op.DELETE), ("results", "r", Op.INSERT),
                   ("results", "gone", Op.DELETE)]
    task = changes[1]
    assert task.state.data["title"] == "T4" and len(task.queue_ids) == 6
    assert task.state.version.origin == "system-a" and not task.state.deleted
    assert changes[4].state.deleted and changes[4].state.data["task_id"] == "t"
    # a limited read takes the records whose first pending entry is oldest, FK-ordered
    assert store.pending(limit=2) == [changes[0], changes[1]]


def test_deletes_of_known_records_go_first_children_before_parents(store: LocalStore,
                                                                   tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'P')")
    conn.execute("INSERT INTO tasks (id, system_id, project_id, title) VALUES "
                 "('t', 'system-a', 'p', 'T')")
    conn.execute("INSERT INTO results (id, system_id, task_id) VALUES ('r', 'system-a', 't')")
    first = store.pending()
    store.ack(first, [{"outcome": "applied"}] * 3)          # the server holds all three
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p2', 'system-a', 'Q')")
    conn.execute("DELETE FROM tasks WHERE id = 't'")
    conn.execute("DELETE FROM results WHERE id = 'r'")
    got = [(c.table, c.record_id, c.op) for c in store.pending()]
    assert got == [("results", "r", Op.DELETE), ("tasks", "t", Op.DELETE),
                   ("projects", "p2", Op.INSERT)]


def test_pending_limit_is_a_bounded_scan_that_still_coalesces(store: LocalStore,
                                                              tmp_path: Path) -> None:
    conn = _app(tmp_path)
    _projects(conn, 5)
    conn.execute("UPDATE projects SET name = 'late' WHERE id = 'p0'")
    conn.execute("DELETE FROM projects WHERE id = 'p1'")
    first = store.pending(limit=2)
    # entries of the chosen records written after the chunk's last entry are included
    assert [(c.record_id, c.op, len(c.queue_ids)) for c in first] == [
        ("p0", Op.INSERT, 2), ("p1", Op.DELETE, 2)]   # p1 was never pushed: after inserts
    assert first[0].state.data["name"] == "late"
    store.ack(first, [{"outcome": "applied"}] * 2)
    assert [c.record_id for c in store.pending(limit=2)] == ["p2", "p3"]
    assert [c.record_id for c in store.pending()] == ["p2", "p3", "p4"]


def test_pending_skip_leaves_records_out_without_counting_them(store: LocalStore,
                                                              tmp_path: Path) -> None:
    conn = _app(tmp_path)
    _projects(conn, 5)
    skip = {("projects", "p0"), ("projects", "p2")}
    got = store.pending(limit=2, skip=skip)
    assert [c.record_id for c in got] == ["p1", "p3"]     # the limit counts the others only
    assert [c.record_id for c in store.pending(skip=skip)] == ["p1", "p3", "p4"]
    assert len(store.pending()) == 5                      # skipping changes nothing stored


def test_entries_of_unsynced_tables_do_not_fill_a_chunk(store: LocalStore,
                                                        tmp_path: Path) -> None:
    conn = _app(tmp_path)
    # e.g. a table removed from sync.toml whose old trigger still wrote entries
    conn.executemany("INSERT INTO sync_queue (operation, table_name, record_id) VALUES "
                     "('INSERT', 'gone_table', ?)", [(f"g{i}",) for i in range(5)])
    _projects(conn, 3)
    got = store.pending(limit=2)
    assert [c.record_id for c in got] == ["p0", "p1"] and got.more
    store.ack(got, [{"outcome": "applied"}] * 2)
    last = store.pending(limit=2)
    assert [c.record_id for c in last] == ["p2"] and not last.more


def test_update_changing_pk_is_delete_plus_insert(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('a', 'system-a', 'P')")
    conn.execute("UPDATE projects SET id = 'b' WHERE id = 'a'")
    ops = conn.execute("SELECT operation, record_id FROM sync_queue ORDER BY id").fetchall()
    assert ops == [("INSERT", "a"), ("DELETE", "a"), ("INSERT", "b")]
    # 'a' was never pushed: its tombstone goes after the table's inserts (issue 11 C)
    assert [(c.record_id, c.op) for c in store.pending()] == [("b", Op.INSERT), ("a", Op.DELETE)]


def test_ack_marks_synced_and_records_version(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'P')")
    (ch,) = store.pending()
    assert store.stats().depth == 1 and store.stats().last_synced_at is None
    conn.execute("UPDATE projects SET name = 'later'")  # arrives while the push is in flight
    assert store.ack([ch], [{"outcome": "applied", "row": None}]) == []
    synced = conn.execute("SELECT synced_at FROM sync_queue ORDER BY id").fetchall()
    assert synced[0][0] is not None and synced[1][0] is None
    (nxt,) = store.pending()
    assert nxt.op is Op.UPDATE and nxt.state.base == ch.state.version
    assert nxt.state.data["name"] == "later"
    assert store.stats().last_synced_at is not None and store.stats().depth == 1


def test_ack_error_retries_then_parks_and_forbidden_parks(store: LocalStore,
                                                          tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'P')")
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('q', 'system-a', 'Q')")
    p, q = store.pending()
    store.ack([q], [{"outcome": "forbidden", "message": "RLS"}])
    for _ in range(store.max_retries):
        store.ack([p], [{"outcome": "error", "message": "23503: fk"}])
    assert store.pending() == []
    st = store.stats()
    assert st.parked == 2 and st.depth == 0
    assert {x["record_id"] for x in store.parked()} == {"p", "q"}
    assert store.unpark("projects", "q") == 1
    assert [c.record_id for c in store.pending()] == ["q"]


def test_remote_wins_over_concurrent_local_edit_is_logged(store: LocalStore,
                                                          tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'mine')")
    (ch,) = store.pending()
    later = ch.state.version.hlc + 10
    applied = store.apply_remote("projects", [_server_row("projects", "p", later, "B",
                                                          name="theirs")])
    assert [c.op for c in applied] == [Op.UPDATE]
    assert conn.execute("SELECT name FROM projects").fetchone()[0] == "theirs"
    assert store.pending() == []  # the superseded pending entries are dropped
    (c,) = store.conflicts()
    assert c["winner"]["version"] == [later, "B"] and c["loser"]["data"]["name"] == "mine"
    lines = (tmp_path / "conflicts.log").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["record_id"] == "p"


def test_local_pending_write_beats_older_remote(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'mine')")
    (ch,) = store.pending()
    older = ch.state.version.hlc - 10
    assert store.apply_remote("projects", [_server_row("projects", "p", older, "B")]) == []
    assert conn.execute("SELECT name FROM projects").fetchone()[0] == "mine"
    assert [c.record_id for c in store.pending()] == ["p"]
    (c,) = store.conflicts()
    assert c["loser"]["version"] == [older, "B"]
    # a redelivery logs nothing new; a duplicate of the same version is a no-op
    store.apply_remote("projects", [_server_row("projects", "p", older, "B")])
    assert len(store.conflicts()) == 1


def test_edit_wins_restores_locally_deleted_row(store: LocalStore, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    store.apply_remote("tasks", [_server_row("tasks", "t", 100, "B", title="v1")])
    conn = _app(tmp_path)
    conn.execute("DELETE FROM tasks WHERE id = 't'")
    (ch,) = store.pending()
    assert ch.state.deleted and ch.state.base == Version(100, "B")
    store.ack([ch], [{"outcome": "applied"}])
    # C edited v1 concurrently (had seen (100, B), not the delete): edit-wins restores it
    with caplog.at_level(logging.WARNING, logger="tablesync.store"):
        applied = store.apply_remote("tasks", [_server_row("tasks", "t", 150, "C", title="v2",
                                                           base=(100, "B"))])
    assert [c.op for c in applied] == [Op.INSERT]
    assert conn.execute("SELECT title, status FROM tasks").fetchone() == ("v2", "pending")
    assert "restored" in caplog.text
    assert store.conflicts()[0]["loser"]["deleted"] is True


def test_superseded_ack_applies_server_row(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'mine')")
    (ch,) = store.pending()
    server = _server_row("projects", "p", ch.state.version.hlc + 5, "B", name="server")
    applied = store.ack([ch], [{"outcome": "superseded", "row": server}])
    assert [c.record_id for c in applied] == ["p"]
    assert conn.execute("SELECT name FROM projects").fetchone()[0] == "server"
    assert store.pending() == [] and len(store.conflicts()) == 1
    assert conn.execute("SELECT count(*) FROM sync_queue").fetchone()[0] == 1  # kept, synced


def test_cursor_roundtrip(store: LocalStore) -> None:
    assert store.get_cursor("tasks") == (0, 0)
    store.set_cursor("tasks", 42, 7)
    assert store.get_cursor("tasks") == (42, 7)


def test_payload_roundtrip(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO tasks (id, system_id, title, priority) VALUES "
                 "('t', 'system-a', 'x', 3)")
    (ch,) = store.pending()
    payload = row_from_state(ch.state)
    assert payload["priority"] == 3 and payload["_ts_origin"] == "system-a"
    assert payload["_ts_base_hlc"] == 0 and payload["_ts_deleted"] is False


def test_own_write_echoed_back_is_not_a_conflict(store: LocalStore, tmp_path: Path) -> None:
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'v1')")
    (ch,) = store.pending()
    conn.execute("UPDATE projects SET name = 'v2'")  # newer local write, not pushed yet
    echo = {**row_from_state(ch.state), "_ts_seq": 1}
    assert store.apply_remote("projects", [echo]) == []
    assert store.conflicts() == []
    assert conn.execute("SELECT name FROM projects").fetchone()[0] == "v2"
    assert [c.state.data["name"] for c in store.pending()] == ["v2"]


def test_prune_drops_only_long_synced_entries_and_never_the_newest(store: LocalStore,
                                                                   tmp_path: Path) -> None:
    conn = _app(tmp_path)
    _projects(conn, 4)
    changes = store.pending()
    store.ack(changes[:3], [{"outcome": "applied"}] * 3)     # p0..p2 synced, p3 pending
    assert store.prune(3600) == 0                              # all synced just now
    conn.execute("UPDATE sync_queue SET synced_at = '2000-01-01 00:00:00.000' "
                 "WHERE synced_at IS NOT NULL")
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p4', 'system-a', 'n')")
    store.ack(store.pending()[-1:], [{"outcome": "applied"}])  # p4: the newest, synced
    conn.execute("UPDATE sync_queue SET synced_at = '2000-01-01 00:00:00.000' "
                 "WHERE record_id = 'p4'")
    assert store.prune(3600) == 3
    left = conn.execute("SELECT record_id, synced_at IS NULL FROM sync_queue ORDER BY id")
    assert left.fetchall() == [("p3", 1), ("p4", 0)]           # pending + the newest kept
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p5', 'system-a', 'n')")
    (top,) = conn.execute("SELECT max(id) FROM sync_queue").fetchone()
    assert top == 6                                            # ids keep growing


def test_note_synced_sets_last_synced_at(store: LocalStore) -> None:
    assert store.stats().last_synced_at is None
    store.note_synced()
    assert store.stats().last_synced_at is not None


def test_superseded_newest_entry_is_closed_not_deleted(store: LocalStore, tmp_path: Path) -> None:
    """A remote row superseding the newest pending entry must not free its id: without
    AUTOINCREMENT SQLite would hand it out again, below the stamping watermark."""
    conn = _app(tmp_path)
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'n')")
    store.stamp()
    (top,) = conn.execute("SELECT max(id) FROM sync_queue").fetchone()
    future = clock.pack(clock.SystemClock().now_ms() + 3_600_000)
    store.apply_remote("projects", [_server_row("projects", "p", future, "B")])
    assert conn.execute("SELECT id, synced_at IS NOT NULL, last_error FROM sync_queue").fetchall(
        ) == [(top, 1, "superseded by a remote version")]
    assert store.pending() == []
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('q', 'system-a', 'n')")
    (ch,) = store.pending()
    assert ch.queue_ids == (top + 1,) and ch.state.version.hlc > future


def test_opening_an_apps_existing_database_announces_every_change(
        project: Project, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An app embedding the engine (no CLI to print them) hears of the switch to WAL, the
    tables and the triggers in its log; a file tablesync creates itself is not announced."""
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("CREATE TABLE notes_of_the_app (id TEXT PRIMARY KEY)")   # the app's data
    app.close()
    with caplog.at_level(logging.WARNING, logger="tablesync.store"):
        LocalStore.open(project, db, conflict_log=tmp_path / "c.log").close()
    lines = [r.getMessage() for r in caplog.records if r.name == "tablesync.store"]
    assert any("from delete to WAL" in line and ".backup" in line for line in lines), lines
    assert any("capture triggers" in line for line in lines), lines
    assert all(line.startswith(f"tablesync changed {db}: ") for line in lines)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tablesync.store"):
        LocalStore.open(project, db, conflict_log=tmp_path / "c.log").close()   # nothing new
        LocalStore.open(project, tmp_path / "new.db", conflict_log=tmp_path / "c.log").close()
    assert [r for r in caplog.records if r.name == "tablesync.store"] == []
