"""Migrate an existing SQLite database to the project: own tables, user tables, triggers.

Rules (docs/generate.md): tablesync's own tables follow versioned migrations
(``_tablesync_migrations``); a new synced table is created; a new column is added with
``ALTER TABLE ADD COLUMN`` (it must be nullable or have a DEFAULT); capture triggers are
dropped and recreated every time. A dropped column, a changed type (SQLite affinity) or a
changed primary key cannot be done without loss and is refused with a GenerateError.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterator

from tablesync.config import Project
from tablesync.errors import GenerateError, StoreError
from tablesync.model import ColumnSpec, TableSpec
from tablesync.sql import sqlite as sq
from tablesync.sql.base import default_sql, ident, type_sql


def statements(script: str) -> Iterator[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute every statement of ``script`` on ``conn`` (inside the caller's transaction)."""
    for stmt in statements(script):
        conn.execute(stmt)


def affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (rules of sqlite.org/datatype3 §3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def migrate(conn: sqlite3.Connection, project: Project) -> list[str]:
    """Bring ``conn``'s database to the project's shape in one transaction; list every
    change made (tables created, columns added, capture triggers installed or rebuilt),
    in words meant for the app's owner (docs/schema-changes.md, "What tablesync changes
    in the app's database")."""
    steps: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = _triggers_now(conn)
        steps += _own_tables(conn)
        for spec in project.tables:
            steps += _user_table(conn, spec, project.ddl[spec.name])
        _triggers(conn, project)
        steps += _trigger_changes(project, before, _triggers_now(conn))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return steps


WAL_NOTE = ("switched the journal mode from {old} to WAL (kept by the file; the app's "
            "other connections use it too): the latest writes may sit in {name}-wal, so "
            "back the database up with `sqlite3 {name} \".backup copy.db\"` or `VACUUM "
            "INTO 'copy.db'`, not a plain file copy")


def enable_wal(conn: sqlite3.Connection, path: str | Path) -> list[str]:
    """Switch ``conn``'s database to WAL; announce it when it was not WAL already."""
    old = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    new = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    if new != "wal":
        raise StoreError(f"{path}: cannot switch to WAL journal mode (still {new}); "
                         "tablesync needs WAL (docs/schema-changes.md)")
    return [] if old == "wal" else [WAL_NOTE.format(old=old, name=Path(path).name)]


def migrate_database(path: str | Path, project: Project) -> list[str]:
    """Open the SQLite file at ``path``, switch it to WAL and :func:`migrate` it; every
    change made, the switch to WAL included."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open SQLite database: {exc}") from exc
    try:
        return enable_wal(conn, path) + migrate(conn, project)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: migration failed: {exc}") from exc
    finally:
        conn.close()


def _own_tables(conn: sqlite3.Connection) -> list[str]:
    had = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.execute(sq.MIGRATIONS_TABLE_SQL)
    done = {r[0] for r in conn.execute("SELECT version FROM _tablesync_migrations")}
    steps: list[str] = []
    for version, name, stmts in sq.OWN_MIGRATIONS:
        if version not in done:
            for stmt in stmts:
                conn.execute(stmt)
            conn.execute("INSERT INTO _tablesync_migrations (version, name) VALUES (?, ?)",
                         (version, name))
            tables = ", ".join(t for t in map(_created, stmts) if t and t not in had)
            steps.append(f"tablesync migration {version} ({name})"
                         + (f": created table(s) {tables}" if tables else ""))
        if version == 1:  # a seed-made sync_queue gets tablesync's columns before the rest
            steps += _queue_extra_columns(conn)
    return steps


def _queue_extra_columns(conn: sqlite3.Connection) -> list[str]:
    have = {r[1] for r in conn.execute("PRAGMA table_info(sync_queue)")}
    steps = []
    for col, decl in sq.QUEUE_EXTRA_COLUMNS.items():
        if col not in have:
            conn.execute(f"ALTER TABLE sync_queue ADD COLUMN {ident(col, 'sqlite')} {decl}")
            steps.append(f"added column sync_queue.{col}")
    return steps


def _user_table(conn: sqlite3.Connection, spec: TableSpec, ddl: str) -> list[str]:
    rows = conn.execute("SELECT name, type, pk FROM pragma_table_info(?)", (spec.name,)).fetchall()
    if not rows:
        conn.execute(sq.table_sql(ddl))
        return [f"created table {spec.name}"]
    existing = {name: (typ, pk) for name, typ, pk in rows}
    where = f"table {spec.name} ({spec.schema_file})"
    dropped = sorted(set(existing) - set(spec.column_names))
    if dropped:
        raise GenerateError(f"{where}: column(s) {', '.join(dropped)} exist in the database "
                            "but not in the schema; dropping columns is not migrated",
                            hint="restore the column in the .sql file or migrate by hand")
    old_pk = [n for n, (_, pk) in existing.items() if pk]
    if old_pk and old_pk != [spec.primary_key]:
        raise GenerateError(f"{where}: primary key changed from {old_pk} to "
                            f"{spec.primary_key!r}; not migrated")
    steps = []
    for col in spec.columns:
        if col.name in existing:
            _check_type(where, col, existing[col.name][0])
            continue
        conn.execute(_add_column_sql(where, spec, col))
        steps.append(f"added column {spec.name}.{col.name}")
    return steps


def _check_type(where: str, col: ColumnSpec, have: str) -> None:
    want = type_sql(col, "sqlite")
    if affinity(have) != affinity(want):
        raise GenerateError(f"{where}: column {col.name} is {have or 'untyped'} in the "
                            f"database but {want} in the schema; type changes are not migrated")


def _add_column_sql(where: str, spec: TableSpec, col: ColumnSpec) -> str:
    default = default_sql(col, "sqlite")
    if col.name == spec.primary_key or (not col.nullable and default is None):
        raise GenerateError(f"{where}: new column {col.name} is NOT NULL without a DEFAULT "
                            "(or the primary key) and cannot be added to an existing table",
                            hint="give it a DEFAULT or make it nullable")
    sql = (f"ALTER TABLE {ident(spec.name, 'sqlite')} ADD COLUMN {ident(col.name, 'sqlite')} "
           f"{type_sql(col, 'sqlite')}")
    sql += f" DEFAULT {default}" if default is not None else ""
    return sql + ("" if col.nullable else " NOT NULL")


def _created(stmt: str) -> str | None:
    m = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\w+)", stmt)
    return m.group(1) if m else None


def _triggers_now(conn: sqlite3.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}


def _trigger_changes(project: Project, before: dict[str, str],
                     after: dict[str, str]) -> list[str]:
    steps = []
    for spec in project.tables:
        names = sq.trigger_names(spec)
        if any(n not in before for n in names):
            steps.append(f"installed capture triggers on {spec.name} ({', '.join(names)}): "
                         f"every insert, update and delete on {spec.name} also adds a row "
                         "to sync_queue")
        elif any(before[n] != after.get(n) for n in names):
            steps.append(f"re-created the capture triggers on {spec.name} (their SQL changed: a "
                         "new column list or a tablesync upgrade)")
    wanted = {n for spec in project.tables for n in sq.trigger_names(spec)}
    gone = sorted(n for n in before if n.startswith(sq.TRIGGER_PREFIX) and n not in after
                  and n not in wanted)
    if gone:
        steps.append(f"dropped capture triggers {', '.join(gone)} (table no longer synced; "
                     "its rows stay)")
    return steps


def _triggers(conn: sqlite3.Connection, project: Project) -> None:
    wanted = {n for spec in project.tables for n in sq.trigger_names(spec)}
    ours = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tablesync\\_%' "
        "ESCAPE '\\'")]
    for name in ours:
        if name not in wanted:
            conn.execute(f"DROP TRIGGER IF EXISTS {ident(name, 'sqlite')}")
    for spec in project.tables:
        run_script(conn, sq.triggers_sql(spec))
