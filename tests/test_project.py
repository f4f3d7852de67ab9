"""load_project: schemas parsed with sqlglot, push order, one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.errors import ConfigError
from tablesync.model import ColumnSpec, DeletePolicy, ForeignKey
from tablesync.project import load_project

ROOT = Path(__file__).resolve().parent.parent
OK = "CREATE TABLE {t} (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, v TEXT);"


def write_project(tmp_path: Path, schemas: dict[str, str], extra: str = "",
                  tables: dict[str, str] | None = None) -> Path:
    """sync.toml + schemas/<name>.sql; ``tables`` overrides a table's TOML body."""
    (tmp_path / "schemas").mkdir(exist_ok=True)
    toml = ['[system]\nid = "system-a"\n', extra]
    for name, sql in schemas.items():
        (tmp_path / "schemas" / f"{name}.sql").write_text(sql)
        body = (tables or {}).get(name, f'schema = "{name}.sql"\n')
        toml.append(f'[tables.{name}]\n{body}')
    for name, body in (tables or {}).items():
        if name not in schemas:
            toml.append(f'[tables.{name}]\n{body}')
    path = tmp_path / "sync.toml"
    path.write_text("\n".join(toml))
    return path


def test_example_project() -> None:
    p = load_project(ROOT / "sync.toml")
    assert p.names == ("projects", "tasks", "results")
    tasks = p.table("tasks")
    assert tasks.primary_key == "id" and tasks.scope == "system_id"
    assert tasks.on_delete_conflict is DeletePolicy.EDIT_WINS
    assert tasks.foreign_keys == (ForeignKey(("project_id",), "projects", ("id",)),)
    assert tasks.column("status") == ColumnSpec("status", "TEXT", False, "'pending'")
    assert tasks.column("id").nullable is False
    assert p.table("results").on_delete_conflict is DeletePolicy.LAST_WRITE_WINS


def test_push_order_is_parents_first_then_priority(tmp_path: Path) -> None:
    child = "CREATE TABLE a (id TEXT PRIMARY KEY, system_id TEXT, b_id TEXT REFERENCES b (id));"
    path = write_project(tmp_path, {"a": child, "b": OK.format(t="b"), "c": OK.format(t="c")},
                         tables={"c": 'schema = "c.sql"\npriority = -1\n'})
    assert load_project(path).names == ("c", "b", "a")


def test_table_level_constraints(tmp_path: Path) -> None:
    sql = ("CREATE TABLE a (id INTEGER, system_id TEXT, p TEXT, PRIMARY KEY (id), "
           "FOREIGN KEY (p) REFERENCES b (id));")
    p = load_project(write_project(tmp_path, {"a": sql, "b": OK.format(t="b")}))
    assert p.table("a").primary_key == "id"
    assert p.table("a").foreign_keys == (ForeignKey(("p",), "b", ("id",)),)


BAD = [
    ({"t": OK.format(t="t")}, {"t": 'schema = "missing.sql"\n'},
     r"\[tables\.t\] schema: schema file not found: .*missing\.sql"),
    ({"t": "CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT); DROP TABLE x;"}, None,
     r"t\.sql: expected exactly one CREATE TABLE statement, found 2 statement"),
    ({"t": "SELECT 1"}, None, r"t\.sql: expected exactly one CREATE TABLE"),
    ({"t": "CREATE TABLE t (id TEXT, system_id TEXT);"}, None,
     r"\[tables\.t\] schema: table 't' has no primary key"),
    ({"t": "CREATE TABLE t (a TEXT, b TEXT, system_id TEXT, PRIMARY KEY (a, b));"}, None,
     r"\[tables\.t\] schema: table 't' has a composite primary key \(a, b\)"),
    ({"t": OK.format(t="t")}, {"t": 'schema = "t.sql"\nprimary_key = "v"\n'},
     r"\[tables\.t\] primary_key: primary_key 'v' differs from the SQL's 'id'"),
    ({"t": OK.format(t="t")}, {"t": 'schema = "t.sql"\nscope = "owner"\n'},
     r"\[tables\.t\] scope: scope column 'owner' is not a column of table 't'"),
    ({"t": "CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, x TEXT REFERENCES u (id));"},
     None, r"\[tables\.t\] schema: table 't' references 'u', which is not a synced table"),
    ({"t": "CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, _ts_hlc TEXT);"}, None,
     r"table t column _ts_hlc: column name '_ts_hlc' uses a prefix or name reserved"),
    ({"t": 'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, "a""b" TEXT);'}, None,
     r"column name 'a\"b' is not allowed"),
    ({"t": 'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, "x\ty" TEXT);'}, None,
     r"column name 'x\\ty' is not allowed"),
    ({"t": 'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, " lead" TEXT);'}, None,
     r"column name ' lead' is not allowed"),
    ({"t": f'CREATE TABLE t (id TEXT PRIMARY KEY, system_id TEXT, "{"é" * 32}" TEXT);'}, None,
     r"is longer than 63 bytes"),
    ({"t": "CREATE TABLE u (id TEXT PRIMARY KEY, system_id TEXT);"}, None,
     r"t\.sql creates table 'u', not 't'"),
    ({"t": "CREATE TABLE t (id TEXT PRIMARY KEY"}, None, r"t\.sql: SQL syntax error: Expecting \)"),
    ({"t": "CREATE TABLE t (id TEXT \"PRIMARY KEY"}, None, r"t\.sql: SQL syntax error"),
]


@pytest.mark.parametrize("schemas, tables, message", BAD)
def test_bad_input_is_one_line_naming_file_table_key(
        tmp_path: Path, schemas: dict[str, str], tables: dict[str, str] | None,
        message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_project(write_project(tmp_path, schemas, tables=tables))
    msg = str(info.value)
    assert "\n" not in msg and ("sync.toml" in msg or ".sql" in msg)


def test_hostile_table_key_in_toml_is_refused(tmp_path: Path) -> None:
    path = write_project(tmp_path, {}, tables={'"a\\"b"': 'schema = "x.sql"\n'})
    with pytest.raises(ConfigError, match=r"\[tables\.a\"b\]: table name 'a\"b' is not allowed"):
        load_project(path)


def test_reserved_words_mixed_case_spaces_and_blob_are_accepted(tmp_path: Path) -> None:
    """Issue 13 item 2: any identifier a real schema uses (quoted everywhere)."""
    path = write_project(tmp_path, {}, tables={
        '"Order Items"': 'schema = "items.sql"\nprimary_key = "ID"\nscope = "user"\n'})
    (tmp_path / "schemas" / "items.sql").write_text(
        'CREATE TABLE "Order Items" ("ID" TEXT PRIMARY KEY, "user" TEXT NOT NULL, '
        '"order" INTEGER, "x; DROP" TEXT, "a\'b" TEXT, "Name" TEXT, img BLOB);')
    project = load_project(path)
    (spec,) = project.tables
    assert spec.name == "Order Items" and spec.scope == "user"
    assert spec.column_names == ("ID", "user", "order", "x; DROP", "a'b", "Name", "img")



@pytest.mark.parametrize("kind", ["SERIAL", "MONEY"])
def test_a_type_no_generator_can_render_is_refused_naming_file_table_and_column(
        kind: str) -> None:
    from tablesync.sql.parse import parse_schema

    with pytest.raises(ConfigError, match=rf"t\.sql: table t: column 'n': type '{kind}' "
                                          r"cannot be synced") as info:
        parse_schema(f"CREATE TABLE t (id TEXT PRIMARY KEY, n {kind})", "t.sql")
    assert "docs/types.md" in str(info.value)
