"""Identifier policy end to end: names the policy admits work quoted in SQLite and Postgres.

Columns named after SQLite/PostgreSQL key words that are not reserved (``index``, ``key``,
``transaction``, ``values``) go through DDL, capture triggers, the store and the Postgres
apply function. Hostile names (quotes, semicolons, spaces, reserved words) are refused
by name before any SQL is produced: see tests/test_project.py and tests/test_cli_gen.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tablesync.project import Project, load_project
from tablesync.sql import postgres
from tablesync.store import LocalStore

SQL = ('CREATE TABLE kw (id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, "index" TEXT, '
       '"key" TEXT, "transaction" TEXT DEFAULT \'t\', "values" INTEGER);')


@pytest.fixture
def kw_project(tmp_path: Path) -> Project:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "kw.sql").write_text(SQL)
    (tmp_path / "sync.toml").write_text('[system]\nid = "system-a"\n[tables.kw]\n'
                                        'schema = "kw.sql"\n')
    return load_project(tmp_path / "sync.toml")


def test_keyword_columns_in_sqlite(kw_project: Project, tmp_path: Path) -> None:
    store = LocalStore.open(kw_project, tmp_path / "a.db", conflict_log=tmp_path / "c.log")
    app = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    app.execute('INSERT INTO kw (id, system_id, "index", "key", "values") '
                "VALUES (1, 'system-a', 'i', 'k', 7)")
    (ch,) = store.pending()
    assert ch.record_id == "1"
    assert dict(ch.state.data) == {"id": 1, "system_id": "system-a", "index": "i", "key": "k",
                                   "transaction": "t", "values": 7}
    store.apply_remote("kw", [{"id": 2, "system_id": "system-a", "index": "x", "key": None,
                               "transaction": "u", "values": 1, "_ts_hlc": 5,
                               "_ts_origin": "B"}])
    assert app.execute('SELECT "index", "transaction" FROM kw WHERE id = 2').fetchone() == (
        "x", "u")
    app.execute("DELETE FROM kw WHERE id = 2")
    (data,) = app.execute("SELECT record_data FROM sync_queue WHERE operation = 'DELETE'"
                          ).fetchone()
    assert json.loads(data)["index"] == "x"
    store.close()


@pytest.mark.postgres
def test_keyword_columns_in_postgres(kw_project: Project, pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        sql = postgres.schema_sql(kw_project.tables, kw_project.ddl).encode()
        conn.execute(sql)
        conn.execute(sql)
        row: dict[str, Any] = {"id": 1, "system_id": "system-a", "index": "i", "key": "k",
                               "values": 3, "_ts_hlc": 9, "_ts_origin": "A"}
        (out,) = conn.execute("SELECT tablesync_apply_kw(%s::jsonb)",
                              (json.dumps([row]),)).fetchone()
        assert out[0]["outcome"] == "applied" and out[0]["id"] == "1"
        got = conn.execute('SELECT "index", "key", "transaction", "values" FROM kw').fetchone()
        assert got == ("i", "k", "t", 3)
