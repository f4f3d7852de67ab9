"""Generated SQLite SQL: queue shape, CHECK equivalence, trigger text, echo guard."""

from __future__ import annotations

import sqlite3

import pytest

from tablesync.project import Project
from tablesync.sql import sqlite as sq


def _db(project: Project) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(sq.schema_sql(project.tables, project.ddl))
    return conn


def test_queue_check_accepts_exactly_the_seed_operations(example: Project) -> None:
    conn = _db(example)
    for op in ("INSERT", "UPDATE", "DELETE"):
        conn.execute("INSERT INTO sync_queue (operation, table_name, record_id) VALUES "
                     "(?, 't', '1')", (op,))
    for bad in ("insert", "UPSERT", ""):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("INSERT INTO sync_queue (operation, table_name, record_id) VALUES "
                         "(?, 't', '1')", (bad,))
    # NULL passes the seed's CHECK (IN) and ours alike
    conn.execute("INSERT INTO sync_queue (operation, table_name, record_id) VALUES "
                 "(NULL, 't', '1')")
    info = {r[1]: (r[2], r[4]) for r in conn.execute("PRAGMA table_info(sync_queue)")}
    assert info["created_at"] == ("TIMESTAMP", "CURRENT_TIMESTAMP")
    assert info["record_data"][0] == "JSON" and info["retry_count"] == ("INTEGER", "0")
    # no AUTOINCREMENT (+0.3-0.4x per captured row); ids are kept growing by never
    # deleting the newest queue row (tests/test_reset.py)
    assert "AUTOINCREMENT" not in conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'sync_queue'").fetchone()[0]


def test_trigger_text_quotes_identifiers_and_keeps_delete_image(example: Project) -> None:
    text = sq.triggers_sql(example.table("tasks"))
    assert 'CREATE TRIGGER "tablesync_tasks_insert" AFTER INSERT ON "tasks"' in text
    assert 'AFTER UPDATE OF "id" ON "tasks" WHEN OLD."id" IS NOT NEW."id"' in text
    assert "VALUES ('INSERT', 'tasks', NEW.\"id\", NULL," in text
    assert "json_object('id', OLD.\"id\", 'system_id', OLD.\"system_id\"" in text
    assert text.count("json_object(") == 2  # DELETE and the PK change's DELETE only


def test_echo_guard_suppresses_capture_only_inside_the_flag(example: Project) -> None:
    conn = _db(example)
    conn.execute("BEGIN")
    conn.execute("UPDATE _tablesync_state SET applying = 1")
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 's', 'n')")
    conn.execute("UPDATE _tablesync_state SET applying = 0")
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM sync_queue").fetchone()[0] == 0
    conn.execute("UPDATE projects SET name = 'm'")
    assert conn.execute("SELECT operation FROM sync_queue").fetchall() == [("UPDATE",)]


def test_triggers_stamp_the_wall_time_and_leave_the_hlc_to_the_store(example: Project) -> None:
    conn = _db(example)
    before = conn.execute("SELECT julianday('now')").fetchone()[0]
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 's', 'n')")
    conn.execute("UPDATE projects SET name = 'm'")
    conn.execute("DELETE FROM projects")
    rows = conn.execute("SELECT operation, hlc, typeof(created_at), created_at FROM "
                        "sync_queue ORDER BY id").fetchall()
    after = conn.execute("SELECT julianday('now')").fetchone()[0]
    assert [r[0] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    assert all(r[1] == 0 and r[2] == "real" and before <= r[3] <= after for r in rows)


def test_hlc_is_strictly_increasing_and_above_observed_clock(example: Project) -> None:
    from tablesync.stamp import stamp_pending
    conn = _db(example)
    conn.execute("UPDATE _tablesync_state SET hlc = ?", (1 << 62,))
    conn.execute("BEGIN")
    for i in range(50):
        conn.execute("INSERT INTO projects (id, system_id, name) VALUES (?, 's', 'n')", (str(i),))
    assert stamp_pending(conn) == 50
    conn.execute("COMMIT")
    hlcs = [r[0] for r in conn.execute("SELECT hlc FROM sync_queue ORDER BY id")]
    assert hlcs[0] == (1 << 62) + 1 and hlcs == list(range(hlcs[0], hlcs[0] + 50))
