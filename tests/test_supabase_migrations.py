"""`tablesync generate` writes timestamped Supabase CLI migrations from the state file.

Migrations are applied to the suite's real PostgreSQL the way `supabase db push` applies
them (the CLI is not available here): every file in file-name order, each in its own
transaction. The resulting server schema must equal a fresh database given the current
idempotent ``supabase.sql``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.errors import GenerateError
from tablesync.project import load_project
from tablesync.schemastate import Step
from tablesync.sql import postgres
from tablesync.supabase_migrations import FILE_RE, STATE_FILE, file_name, plan, versions

NOTES = "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT);"
# the Supabase CLI's naming: <YYYYMMDDHHMMSS>_<name>.sql, UTC
CLI_NAME = re.compile(r"^(\d{14})_tablesync_[a-z0-9_]+\.sql$")


def write_project(root: Path, schemas: dict[str, str], extra: str = "") -> Path:
    """sync.toml (one table per schema, scope system_id) plus schemas/ in ``root``."""
    (root / "schemas").mkdir(parents=True, exist_ok=True)
    toml = ['[system]\nid = "system-a"\ndatabase = "app.db"\n']
    for name, sql in schemas.items():
        (root / "schemas" / f"{name}.sql").write_text(sql)
        toml.append(f'[tables.{name}]\nschema = "{name}.sql"\n' + (extra if name == "notes"
                                                                   else ""))
    (root / "sync.toml").write_text("\n".join(toml))
    return root / "sync.toml"


def generate(cfg: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["generate", "--config", str(cfg), "--out",
                                   str(cfg.parent / "generated"), *args])
    return res.exit_code, res.output


def migration_files(root: Path) -> list[Path]:
    return sorted((root / "supabase" / "migrations").glob("*.sql"))


def db_push(dsn: str, files: list[Path]) -> None:
    """What `supabase db push` does with pending files: in name order, one transaction
    each."""
    import psycopg

    for f in sorted(files, key=lambda p: p.name):
        with psycopg.connect(dsn) as conn:      # commits on a clean exit
            conn.execute(f.read_text().encode())


def server_schema(dsn: str) -> dict[str, Any]:
    """Everything generate puts on the server, order-independent."""
    import psycopg

    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default "
                   "FROM information_schema.columns WHERE table_schema = 'public'",
        "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
                     "WHERE pronamespace = 'public'::regnamespace",
        "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
        "policies": "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
        "publication": "SELECT tablename FROM pg_publication_tables",
        "grants": "SELECT table_name, grantee, privilege_type FROM "
                  "information_schema.role_table_grants WHERE table_schema = 'public'",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {k: sorted(map(tuple, conn.execute(q).fetchall())) for k, q in queries.items()}


_fresh = itertools.count()


def fresh_schema(pg_server: Any, cfg: Path) -> dict[str, Any]:
    """The server schema of a fresh database given the current ``supabase.sql``."""
    name = f"fresh_{os.getpid()}_{next(_fresh)}"
    dsn = pg_server.create_database(name, template="tablesync_template")
    try:
        project = load_project(cfg)
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
        return server_schema(dsn)
    finally:
        pg_server.drop_database(name)


# -- naming -----------------------------------------------------------------------------


def test_versions_are_utc_increasing_and_never_collide() -> None:
    now = datetime(2026, 3, 1, 12, 0, 5, 900000, tzinfo=timezone.utc)
    assert versions([], now, 2) == ["20260301120005", "20260301120006"]
    # a file from this very second (an earlier run) and one from the future: go above both
    assert versions(["20260301120005"], now, 1) == ["20260301120006"]
    assert versions(["20260301120005", "20270101000000"], now, 1) == ["20270101000001"]
    assert versions(["20261231235959"], now, 2) == ["20270101000000", "20270101000001"]
    # a local time zone is converted
    from datetime import timedelta

    assert versions([], now.astimezone(timezone(timedelta(hours=2))), 1) == ["20260301120005"]


def test_file_names_follow_the_supabase_cli_pattern() -> None:
    names = [file_name("20260301120005", Step("init")),
             file_name("20260301120006", Step("add_table", "Order Items")),
             file_name("20260301120007", Step("add_column", "order", ("Due Date", "x-y"))),
             file_name("20260301120008", Step("update_table", "t" * 200))]
    assert names[:3] == ["20260301120005_tablesync_init.sql",
                         "20260301120006_tablesync_add_table_order_items.sql",
                         "20260301120007_tablesync_add_column_order_due_date_x_y.sql"]
    for n in names:
        assert CLI_NAME.match(n) and FILE_RE.match(n), n
        assert len(n) < 120


# -- generate through the CLI -----------------------------------------------------------


def test_first_run_writes_init_then_nothing_changed(tmp_path: Path) -> None:
    cfg = write_project(tmp_path, {"notes": NOTES})
    code, out = generate(cfg)
    assert code == 0, out
    files = migration_files(tmp_path)
    assert len(files) == 1 and CLI_NAME.match(files[0].name)
    assert files[0].name.endswith("_tablesync_init.sql")
    # the init migration is the idempotent script with a header
    script = (tmp_path / "generated" / "supabase.sql").read_text()
    assert files[0].read_text().endswith(script)
    state = json.loads((tmp_path / "supabase" / STATE_FILE).read_text())
    assert state["tables"]["notes"]["primary_key"] == "id"
    assert [c["name"] for c in state["tables"]["notes"]["columns"]] == ["id", "system_id",
                                                                       "body"]
    assert "next: apply the migration to the server" in out
    before = (tmp_path / "supabase" / STATE_FILE).read_text()
    code, out = generate(cfg)
    assert code == 0 and "nothing changed" in out and "wrote" not in out, out
    assert migration_files(tmp_path) == files
    assert (tmp_path / "supabase" / STATE_FILE).read_text() == before
    assert generate(cfg, "--check")[0] == 0


def test_check_names_a_due_migration(tmp_path: Path) -> None:
    cfg = write_project(tmp_path, {"notes": NOTES})
    assert generate(cfg)[0] == 0
    write_project(tmp_path, {"notes": NOTES.replace("body TEXT", "body TEXT, tag TEXT")})
    code, out = generate(cfg, "--check")
    assert code == 1 and "_tablesync_add_column_notes_tag.sql" in out, out
    assert len(migration_files(tmp_path)) == 1


def test_supabase_dir_option(tmp_path: Path) -> None:
    cfg = write_project(tmp_path, {"notes": NOTES})
    code, out = generate(cfg, "--supabase-dir", str(tmp_path / "elsewhere"))
    assert code == 0, out
    assert len(list((tmp_path / "elsewhere" / "migrations").glob("*_tablesync_init.sql"))) == 1
    assert (tmp_path / "elsewhere" / STATE_FILE).exists()
    assert not (tmp_path / "supabase").exists()


@pytest.mark.parametrize("schemas, extra, needles", [
    ({"notes": "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL);"}, "",
     ["notes.body: column dropped from notes.sql", 'DROP COLUMN "body"']),
    ({"notes": NOTES.replace("body TEXT", "body INTEGER")}, "",
     ["notes.body: type changed from TEXT to BIGINT"]),
    ({"notes": "CREATE TABLE notes (id TEXT, system_id TEXT NOT NULL, body TEXT PRIMARY KEY);"},
     "", ["notes: primary key changed from 'id' to 'body'"]),
    ({"notes": NOTES.replace("body TEXT", "body TEXT, owner TEXT")}, 'scope = "owner"\n',
     ["notes: scope column changed from 'system_id' to 'owner'"]),
    ({"notes": NOTES.replace("body TEXT", "body TEXT, n INTEGER NOT NULL")}, "",
     ["notes.n: new column is NOT NULL without a DEFAULT"]),
    ({"notes": NOTES.replace("body TEXT", "body TEXT NOT NULL")}, "",
     ["notes.body: NOT NULL or DEFAULT changed"]),
])
def test_refused_changes_name_table_and_column(tmp_path: Path, schemas: dict[str, str],
                                               extra: str, needles: list[str]) -> None:
    cfg = write_project(tmp_path, {"notes": NOTES})
    assert generate(cfg)[0] == 0
    state = (tmp_path / "supabase" / STATE_FILE).read_text()
    write_project(tmp_path, schemas, extra)
    with pytest.raises(GenerateError) as err:
        plan(load_project(cfg), tmp_path / "supabase")
    for needle in needles:
        assert needle in str(err.value)
    assert "--accept-manual" in str(err.value)
    code, out = generate(cfg)
    assert code == 1 and out.startswith("error: schema change(s) refused"), out
    assert len(migration_files(tmp_path)) == 1
    assert (tmp_path / "supabase" / STATE_FILE).read_text() == state


def test_missing_state_with_existing_migrations_is_refused(tmp_path: Path) -> None:
    cfg = write_project(tmp_path, {"notes": NOTES})
    assert generate(cfg)[0] == 0
    (tmp_path / "supabase" / STATE_FILE).unlink()
    code, out = generate(cfg)
    assert code == 1 and "tablesync-schema.json is missing" in out, out


def test_announces_every_change_to_an_existing_app_database(tmp_path: Path) -> None:
    app_db = tmp_path / "app.db"
    conn = sqlite3.connect(app_db, isolation_level=None)
    conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('n1', 'system-a', 'kept')")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    cfg = write_project(tmp_path, {"notes": NOTES})
    code, out = generate(cfg)
    assert code == 0, out
    assert "switched the journal mode from delete to WAL" in out
    assert 'sqlite3 app.db ".backup copy.db"' in out and "VACUUM INTO" in out
    assert "created table(s) sync_queue, _tablesync_state" in out
    assert "installed capture triggers on notes" in out
    conn = sqlite3.connect(app_db, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    # a second run changes nothing and says nothing about the database
    code, out = generate(cfg)
    assert code == 0 and f"changed {app_db}" not in out, out
    # an added column: announced, with the triggers it rebuilt
    write_project(tmp_path, {"notes": NOTES.replace("body TEXT", "body TEXT, tag TEXT")})
    code, out = generate(cfg)
    assert code == 0, out
    assert "added column notes.tag" in out
    assert "re-created the capture triggers on notes (their SQL changed" in out
    assert conn.execute("SELECT id, tag FROM notes").fetchall() == [("n1", None)]


# -- applied to PostgreSQL --------------------------------------------------------------


GROWN = {"notes": NOTES.replace("body TEXT", 'body TEXT, "Due Date" TEXT, '
                                "stars INTEGER NOT NULL DEFAULT 0"),
         "labels": "CREATE TABLE labels (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, "
                   "note_id TEXT REFERENCES notes (id), name TEXT);"}


@pytest.mark.postgres
def test_migrations_in_order_equal_a_fresh_generate(pg_server: Any, pg_dsn: str,
                                                    tmp_path: Path) -> None:
    import psycopg

    cfg = write_project(tmp_path, {"notes": NOTES})
    assert generate(cfg)[0] == 0
    db_push(pg_dsn, migration_files(tmp_path))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, system_id, body) VALUES ('n1', 'system-a', 'hi')")
    pushed = set(migration_files(tmp_path))
    # add a table (child of notes) and two columns in one run
    write_project(tmp_path, GROWN)
    code, out = generate(cfg)
    assert code == 0, out
    new = [f for f in migration_files(tmp_path) if f not in pushed]
    assert [f.name[15:] for f in new] == ["tablesync_add_column_notes_due_date_stars.sql",
                                          "tablesync_add_table_labels.sql"]
    assert all(CLI_NAME.match(f.name) for f in new)
    text = new[0].read_text()
    assert 'ADD COLUMN IF NOT EXISTS "Due Date" TEXT;' in text
    assert "CREATE TABLE" not in text          # only the change and what depends on it
    db_push(pg_dsn, new)
    # a settings change: the table's server objects are re-created
    write_project(tmp_path, GROWN, 'on_delete_conflict = "last-write-wins"\n')
    code, out = generate(cfg)
    newer = [f for f in migration_files(tmp_path) if f not in pushed and f not in new]
    assert code == 0 and [f.name[15:] for f in newer] == ["tablesync_update_table_notes.sql"]
    db_push(pg_dsn, newer)
    assert server_schema(pg_dsn) == fresh_schema(pg_server, cfg)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute('SELECT id, body, "Due Date", stars FROM notes').fetchone()
        assert row == ("n1", "hi", None, 0)
        out = conn.execute("SELECT tablesync_apply_labels('[]'::jsonb)").fetchone()
        assert out == ([],)


@pytest.mark.postgres
def test_dropped_column_by_the_manual_steps(pg_server: Any, pg_dsn: str,
                                            tmp_path: Path) -> None:
    """The refusal's steps, followed: own migration dropping the column, the replica's
    SQLite column dropped, then `generate --accept-manual`."""
    import psycopg

    cfg = write_project(tmp_path, {"notes": NOTES.replace("body TEXT", "body TEXT, old TEXT")})
    sqlite3.connect(tmp_path / "app.db").close()
    assert generate(cfg)[0] == 0
    db_push(pg_dsn, migration_files(tmp_path))
    pushed = set(migration_files(tmp_path))
    write_project(tmp_path, {"notes": NOTES})
    code, out = generate(cfg)
    assert code == 1 and "notes.old: column dropped" in out
    # server: a migration of the user's own (`supabase migration new drop_notes_old`)
    # (what `supabase migration new` names it a moment later; above the tablesync files)
    version = versions([f.name[:14] for f in pushed], datetime.now(timezone.utc), 1)[0]
    own = tmp_path / "supabase" / "migrations" / f"{version}_drop_notes_old.sql"
    own.write_text('ALTER TABLE public.notes DROP COLUMN "old";\n')
    # replica: drop the triggers, then the column (generate re-creates the triggers)
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    for n in ("insert", "update", "update_pk", "delete"):
        conn.execute(f"DROP TRIGGER tablesync_notes_{n}")
    conn.execute("ALTER TABLE notes DROP COLUMN old")
    code, out = generate(cfg, "--accept-manual")
    assert code == 0, out
    new = [f for f in migration_files(tmp_path) if f not in pushed]
    assert [f.name for f in new][0] == own.name
    assert new[1].name.endswith("_tablesync_update_table_notes.sql") and new[1].name > own.name
    db_push(pg_dsn, new)
    assert server_schema(pg_dsn) == fresh_schema(pg_server, cfg)
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        pg.execute("SELECT tablesync_apply_notes('[]'::jsonb)")
    assert generate(cfg)[0] == 0 and len(migration_files(tmp_path)) == len(pushed) + 2


def test_sync_commands_announce_on_stderr(tmp_path: Path) -> None:
    """`sync status --json` on an app database tablesync never touched: the changes are
    announced on stderr, stdout stays JSON."""
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT)")
    conn.close()
    cfg = write_project(tmp_path, {"notes": NOTES})
    res = CliRunner().invoke(app, ["sync", "status", "--config", str(cfg), "--json"])
    assert res.exit_code == 1, res.output       # no engine running: yellow (operations.md)
    assert json.loads(res.stdout)["queue_depth"] == 0
    assert "switched the journal mode from delete to WAL" in res.stderr
    assert "installed capture triggers on notes" in res.stderr


TYPES = ("TEXT", "INTEGER", "REAL", "BOOLEAN", "JSON", "TIMESTAMP", "NUMERIC", "BLOB")


@pytest.mark.postgres
@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(st.tuples(st.sampled_from(TYPES), st.booleans()),
                                min_size=1, max_size=3), min_size=1, max_size=2),
       new_table=st.integers(min_value=0, max_value=2))
def test_any_sequence_of_supported_changes_equals_a_fresh_generate(
        pg_server: Any, rounds: list[list[tuple[str, bool]]], new_table: int) -> None:
    """Rounds of added columns (random types, some with a DEFAULT) and maybe a table:
    each round's files pushed before the next generate; the end equals a fresh one."""
    import tempfile

    dsn_name = f"seq_{os.getpid()}_{next(_fresh)}"
    dsn = pg_server.create_database(dsn_name, template="tablesync_template")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cols: list[str] = []
        schemas = {"notes": NOTES}
        cfg = write_project(root, schemas)
        try:
            assert generate(cfg, "--no-migrate")[0] == 0
            pushed: set[Path] = set()
            for i, adds in enumerate(rounds):
                db_push(dsn, [f for f in migration_files(root) if f not in pushed])
                pushed.update(migration_files(root))
                for j, (typ, with_default) in enumerate(adds):
                    default = {"TEXT": "'x'", "BOOLEAN": "FALSE", "JSON": "'{}'",
                               "TIMESTAMP": "'2026-01-01 00:00:00'",
                               "BLOB": "NULL"}.get(typ, "0") if with_default else None
                    cols.append(f'"c{i}_{j}" {typ}' + (f" DEFAULT {default}" if default
                                                         else ""))
                schemas = {"notes": NOTES.replace("body TEXT", ", ".join(["body TEXT"] + cols))}
                if 0 < new_table <= i + 1:      # added in round new_table, kept after
                    schemas["extra"] = NOTES.replace("notes", "extra")
                write_project(root, schemas)
                code, out = generate(cfg, "--no-migrate")
                assert code == 0 and "wrote" in out, out
            db_push(dsn, [f for f in migration_files(root) if f not in pushed])
            assert server_schema(dsn) == fresh_schema(pg_server, cfg)
        finally:
            pg_server.drop_database(dsn_name)
