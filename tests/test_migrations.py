"""Re-running generate after adding a table or a column migrates SQLite and Postgres."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tablesync.errors import GenerateError
from tablesync.migrations import migrate_database
from tablesync.project import Project, load_project
from tablesync.sql import postgres
from tablesync.sql import sqlite as sq

BASE = {"notes": "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT);"}


def make_project(tmp_path: Path, schemas: dict[str, str]) -> Project:
    """A sync.toml with one table per schema (scope system_id) in ``tmp_path``."""
    (tmp_path / "schemas").mkdir(exist_ok=True)
    toml = ['[system]\nid = "system-a"\ndatabase = "app.db"\n']
    for name, sql in schemas.items():
        (tmp_path / "schemas" / f"{name}.sql").write_text(sql)
        toml.append(f'[tables.{name}]\nschema = "{name}.sql"\n')
    (tmp_path / "sync.toml").write_text("\n".join(toml))
    return load_project(tmp_path / "sync.toml")


def _grown() -> dict[str, str]:
    return {"notes": "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, "
                     "body TEXT, stars INTEGER NOT NULL DEFAULT 0, tag TEXT);",
            "labels": "CREATE TABLE labels (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, "
                      "note_id TEXT REFERENCES notes (id));"}


def test_sqlite_add_table_and_columns_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    migrate_database(db, make_project(tmp_path, BASE))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO notes VALUES ('n1', 'system-a', 'hello')")
    steps = migrate_database(db, make_project(tmp_path, _grown()))
    assert steps == ["added column notes.stars", "added column notes.tag",
                     "created table labels",
                     "re-created the capture triggers on notes (their SQL changed: a new column list or a tablesync upgrade)",
                     "installed capture triggers on labels (tablesync_labels_insert, "
                     "tablesync_labels_update, tablesync_labels_update_pk, "
                     "tablesync_labels_delete): every insert, update and delete on labels "
                     "also adds a row to sync_queue"]
    assert conn.execute("SELECT * FROM notes").fetchall() == [("n1", "system-a", "hello", 0, None)]
    conn.execute("DELETE FROM notes")  # the recreated trigger captures the new column too
    (data,) = conn.execute("SELECT record_data FROM sync_queue WHERE operation = 'DELETE'"
                           ).fetchone()
    assert '"stars":0' in data
    conn.execute("INSERT INTO labels VALUES ('l', 'system-a', NULL)")
    assert conn.execute("SELECT count(*) FROM sync_queue WHERE table_name = 'labels'"
                        ).fetchone()[0] == 1
    assert migrate_database(db, make_project(tmp_path, _grown())) == []


def test_sqlite_removed_table_loses_its_triggers(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    migrate_database(db, make_project(tmp_path, _grown()))
    migrate_database(db, make_project(tmp_path, {"notes": _grown()["notes"]}))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO labels VALUES ('l', 'system-a', NULL)")
    assert conn.execute("SELECT count(*) FROM sync_queue").fetchone()[0] == 0


@pytest.mark.parametrize("schema, message", [
    ("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL);",
     r"column\(s\) body exist in the database but not in the schema"),
    ("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body INTEGER);",
     r"column body is TEXT in the database but INTEGER"),
    ("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT, "
     "must TEXT NOT NULL);", r"new column must is NOT NULL without a DEFAULT"),
])
def test_sqlite_lossy_changes_are_refused(tmp_path: Path, schema: str, message: str) -> None:
    db = tmp_path / "app.db"
    migrate_database(db, make_project(tmp_path, BASE))
    with pytest.raises(GenerateError, match=message):
        migrate_database(db, make_project(tmp_path, {"notes": schema}))


def test_sqlite_seed_sync_queue_gets_extra_columns(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(sq.SEED_SYNC_QUEUE_SQL)
    conn.execute("INSERT INTO sync_queue (operation, table_name, record_id) VALUES "
                 "('INSERT', 'notes', 'old')")
    steps = migrate_database(db, make_project(tmp_path, BASE))
    assert "added column sync_queue.hlc" in steps
    assert conn.execute("SELECT record_id, hlc FROM sync_queue").fetchall() == [("old", 0)]


def _pg_apply(conn: Any, project: Project) -> None:
    conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())


@pytest.mark.postgres
def test_postgres_add_table_and_columns_keeps_rows(pg_dsn: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        _pg_apply(conn, make_project(tmp_path, BASE))
        conn.execute("INSERT INTO notes (id, system_id, body) VALUES ('n1', 'system-a', 'hi')")
        _pg_apply(conn, make_project(tmp_path, _grown()))
        _pg_apply(conn, make_project(tmp_path, _grown()))  # idempotent
        row = conn.execute("SELECT id, body, stars, tag, _ts_origin FROM notes").fetchone()
        assert row == ("n1", "hi", 0, None, "server")
        conn.execute("SELECT tablesync_apply_labels('[]'::jsonb)")
        pubs = {r[0] for r in conn.execute("SELECT tablename FROM pg_publication_tables")}
        assert pubs == {"notes", "labels", "tablesync_exits"}


@pytest.mark.postgres
@pytest.mark.parametrize("schema, message", [
    ("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body INTEGER);",
     "public.notes.body has type text in the database but BIGINT"),
    ("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL);",
     r"public.notes has column\(s\) body not declared"),
])
def test_postgres_lossy_changes_are_refused(pg_dsn: str, tmp_path: Path, schema: str,
                                            message: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        _pg_apply(conn, make_project(tmp_path, BASE))
        conn.execute("INSERT INTO notes (id, system_id, body) VALUES ('n1', 'system-a', 'hi')")
        with pytest.raises(psycopg.errors.RaiseException, match=message):
            _pg_apply(conn, make_project(tmp_path, {"notes": schema}))
        assert conn.execute("SELECT body FROM notes").fetchone() == ("hi",)
