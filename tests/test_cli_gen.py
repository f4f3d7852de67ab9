"""`tablesync generate` through the CLI: outputs, --check, migration, and bad input.

Every bad input ends in one red line naming file/table/key, a non-zero exit and no
traceback.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tablesync.cli import app

ROOT = Path(__file__).resolve().parent.parent
OK = "CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, v TEXT);\n"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "sync.toml", tmp_path / "sync.toml")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    return tmp_path


def test_generate_check_and_migrate(example: Path) -> None:
    cfg, out = str(example / "sync.toml"), str(example / "generated")
    code, text = _run("generate", "--config", cfg, "--out", out, "--check")
    assert code == 1 and "stale generated file(s)" in text and "sqlite.sql" in text
    code, text = _run("generate", "--config", cfg, "--out", out)
    assert code == 0 and "wrote" in text
    assert _run("generate", "--config", cfg, "--out", out, "--check")[0] == 0
    # the app's database exists: re-running generate after adding a column migrates it
    db = example / "data" / "system-a.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript((example / "generated" / "sqlite.sql").read_text())
    conn.execute("INSERT INTO projects (id, system_id, name) VALUES ('p', 'system-a', 'n')")
    schema = example / "schemas" / "projects.sql"
    schema.write_text(schema.read_text().replace("created_at TEXT", "created_at TEXT, url TEXT"))
    code, text = _run("generate", "--config", cfg, "--out", out)
    assert code == 0 and "added column projects.url" in text
    assert conn.execute("SELECT id, url FROM projects").fetchall() == [("p", None)]
    code, text = _run("generate", "--config", cfg, "--out", out, "--check")
    assert code == 0


def _project(tmp_path: Path, toml_tables: str, schemas: dict[str, str]) -> str:
    (tmp_path / "schemas").mkdir()
    for name, sql in schemas.items():
        (tmp_path / "schemas" / name).write_text(sql)
    (tmp_path / "sync.toml").write_text('[system]\nid = "s"\n' + toml_tables)
    return str(tmp_path / "sync.toml")


CASES = [
    ("[system\nid=1", {}, r"sync\.toml: TOML syntax error"),
    ('[tables.t]\nschema = "nope.sql"\n', {}, r"\[tables\.t\] schema: schema file not found"),
    ('[tables.t]\nschema = "t.sql"\nscope = "org"\n', {"t.sql": OK},
     r"\[tables\.t\] scope: scope column 'org' is not a column of table 't'"),
    ('[tables.t]\nschema = "t.sql"\n', {"t.sql": "CREATE TABLE t (id TEXT, system_id TEXT);"},
     r"\[tables\.t\] schema: table 't' has no primary key"),
    ('[tables.t]\nschema = "t.sql"\n',
     {"t.sql": 'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, "x""; DROP TABLE t; --" '
               "TEXT);"}, r"t\.sql: table t column .*: column name .* is not allowed"),
    ('[tables.t]\nschema = "t.sql"\n',
     {"t.sql": 'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, "_ts_x" TEXT);'},
     r"column name '_ts_x' uses a prefix or name reserved for tablesync"),
    ('[tables."drop\\ttable"]\nschema = "t.sql"\n', {"t.sql": OK},
     r"\[tables\.drop\ttable\]: table name 'drop\\ttable' is not allowed"),
    ('[tables.t]\nschema = "t.sql"\nbogus = 1\n', {"t.sql": OK},
     r"\[tables\.t\] bogus: unknown key"),
]


@pytest.mark.parametrize("toml, schemas, message", CASES)
def test_bad_input_one_line_no_traceback(tmp_path: Path, toml: str, schemas: dict[str, str],
                                         message: str) -> None:
    import re

    code, text = _run("generate", "--config", _project(tmp_path, toml, schemas),
                      "--out", str(tmp_path / "g"))
    assert code == 2, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "g").exists()


def test_lossy_migration_is_refused_through_cli(example: Path) -> None:
    cfg, out = str(example / "sync.toml"), str(example / "generated")
    db = example / "data" / "system-a.db"
    db.parent.mkdir()
    assert _run("generate", "--config", cfg, "--out", out)[0] == 0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript((example / "generated" / "sqlite.sql").read_text())
    schema = example / "schemas" / "projects.sql"
    schema.write_text(schema.read_text().replace("    description TEXT,\n", ""))
    before = sorted((example / "supabase").rglob("*"))
    code, text = _run("generate", "--config", cfg, "--out", out)
    # refused by the state diff first, with the manual steps; nothing written
    assert code == 1 and text.startswith("error: schema change(s) refused")
    assert "projects.description: column dropped from projects.sql" in text
    assert 'ALTER TABLE "public"."projects" DROP COLUMN "description"' in text
    assert sorted((example / "supabase").rglob("*")) == before
    # --accept-manual without the replica's manual step: the local migration refuses
    code, text = _run("generate", "--config", cfg, "--out", out, "--accept-manual")
    assert code == 1 and len(text.strip().splitlines()) == 1
    assert "column(s) description exist in the database but not in the schema" in text
    assert sorted((example / "supabase").rglob("*")) == before
