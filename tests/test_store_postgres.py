"""LocalStore against the generated Postgres SQL (no REST): push, ack, pull, conflicts.

The store's payloads go through ``tablesync_apply_<table>`` as the authenticated system
(RLS on), outcomes come back into ``ack``, and server rows (a dashboard edit stamped by
the trigger) come back through ``apply_remote``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tablesync.model import Change, Op
from tablesync.project import Project, load_project
from tablesync.rows import row_from_state
from tablesync.sql import postgres
from tablesync.store import LocalStore

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def setup(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[Project, LocalStore, Any, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    project = load_project(ROOT / "sync.toml")
    admin = psycopg.connect(pg_dsn, autocommit=True, row_factory=dict_row)
    admin.execute(postgres.schema_sql(project.tables, project.ddl).encode())
    user = psycopg.connect(pg_dsn, autocommit=True, row_factory=dict_row)
    claims = json.dumps({"role": "authenticated", "app_metadata": {"system_id": "system-a"}})
    user.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))
    user.execute("SET ROLE authenticated")
    store = LocalStore.open(project, tmp_path / "a.db", conflict_log=tmp_path / "c.log")
    yield project, store, admin, user
    store.close()
    user.close()
    admin.close()


def push(store: LocalStore, user: Any) -> list[Change]:
    """One push cycle: per table in order, the apply RPC, then ack. Returns applied."""
    from psycopg import sql

    changes = store.pending()
    outcomes: list[dict[str, Any]] = []
    i = 0
    while i < len(changes):
        j = i
        while j < len(changes) and changes[j].table == changes[i].table:
            j += 1
        fn = sql.Identifier("public", postgres.apply_function_name(changes[i].table))
        rows = [row_from_state(c.state) for c in changes[i:j]]
        out = user.execute(sql.SQL("SELECT {}(%s::jsonb) AS r").format(fn),
                           (json.dumps(rows),)).fetchone()["r"]
        outcomes += out
        i = j
    return store.ack(changes, outcomes)


def pull(store: LocalStore, user: Any, table: str) -> list[Change]:
    cursor, _ = store.get_cursor(table)
    mark = user.execute("SELECT tablesync_watermark() AS w").fetchone()["w"]
    rows = user.execute(f"SELECT * FROM {table} WHERE _ts_xid >= %s ORDER BY _ts_seq",
                        (cursor,)).fetchall()
    applied = store.apply_remote(table, rows)
    store.set_cursor(table, mark)
    return applied


def test_push_pull_roundtrip_and_conflict(setup: tuple[Project, LocalStore, Any, Any],
                                          tmp_path: Path) -> None:
    _, store, admin, user = setup
    app = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    app.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'P')")
    app.execute("INSERT INTO tasks (id, system_id, project_id, title) VALUES "
                "('t', 'system-a', 'p', 'T')")
    assert push(store, user) == []
    assert store.pending() == [] and store.stats().last_synced_at is not None
    srv = admin.execute("SELECT * FROM tasks").fetchone()
    assert srv["title"] == "T" and srv["_ts_origin"] == "system-a" and srv["_ts_seq"]

    # a dashboard edit is versioned by the trigger and pulled without echo
    admin.execute("UPDATE tasks SET title = 'from dashboard'")
    applied = pull(store, user, "tasks")
    assert [(c.record_id, c.op) for c in applied] == [("t", Op.UPDATE)]
    assert app.execute("SELECT title FROM tasks").fetchone()[0] == "from dashboard"
    assert store.pending() == [] and pull(store, user, "tasks") == []

    # an offline edit older than a later dashboard edit loses; the server row comes back
    app.execute("UPDATE tasks SET title = 'offline edit'")
    time.sleep(0.005)   # a later millisecond: within one, the HLC counters decide, not "later"
    admin.execute("UPDATE tasks SET title = 'later dashboard'")
    applied = push(store, user)
    assert [c.record_id for c in applied] == ["t"]
    assert app.execute("SELECT title FROM tasks").fetchone()[0] == "later dashboard"
    (conflict,) = store.conflicts()
    assert conflict["loser"]["data"]["title"] == "offline edit"

    # a delete becomes a tombstone on the server
    app.execute("DELETE FROM tasks WHERE id = 't'")
    push(store, user)
    assert admin.execute("SELECT _ts_deleted FROM tasks").fetchone()["_ts_deleted"] is True
    assert pull(store, user, "tasks") == []  # our own tombstone: nothing to apply
    assert app.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
