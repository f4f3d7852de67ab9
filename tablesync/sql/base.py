"""Quoting helpers shared by the dialect generators: every identifier goes through sqlglot."""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlglot import exp

from tablesync.model import ColumnSpec, TableSpec


def ident(name: str, dialect: str) -> str:
    """``name`` as a quoted identifier of ``dialect``."""
    return exp.to_identifier(name, quoted=True).sql(dialect=dialect)


def lit(value: str, dialect: str) -> str:
    """``value`` as a string literal of ``dialect``."""
    return exp.Literal.string(value).sql(dialect=dialect)


def qualified(schema: str, name: str, dialect: str) -> str:
    """``schema.name`` with both parts quoted."""
    return exp.Table(this=exp.to_identifier(name, quoted=True),
                     db=exp.to_identifier(schema, quoted=True)).sql(dialect=dialect)


T = exp.DataType.Type
# Declared SQLite type -> the Postgres type that holds every value SQLite can hold
# (docs/types.md). Types not listed keep sqlglot's Postgres rendering of the declaration.
_PG_TYPES: dict[Any, str] = {
    **dict.fromkeys((T.INT, T.BIGINT, T.SMALLINT, T.TINYINT, T.MEDIUMINT, T.UINT, T.UBIGINT,
                     T.USMALLINT, T.UTINYINT, T.UMEDIUMINT), "BIGINT"),
    **dict.fromkeys((T.FLOAT, T.DOUBLE), "DOUBLE PRECISION"),
    **dict.fromkeys((T.TEXT, T.VARCHAR, T.CHAR, T.NCHAR, T.NVARCHAR, T.MEDIUMTEXT,
                     T.LONGTEXT, T.TINYTEXT), "TEXT"),
    **dict.fromkeys((T.VARBINARY, T.BINARY, T.BLOB, T.LONGBLOB, T.MEDIUMBLOB, T.TINYBLOB),
                    "BYTEA"),
    **dict.fromkeys((T.JSON, T.JSONB), "JSONB"),
    T.DATETIME: "TIMESTAMP",
}


def pg_type(sql_type: str) -> str:
    """The Postgres type of a declared (SQLite) column type, per docs/types.md."""
    dt = exp.DataType.build(sql_type)
    return _PG_TYPES.get(dt.this) or dt.sql(dialect="postgres")


def legacy_pg_type(sql_type: str) -> str:
    """What earlier versions generated for ``sql_type`` (sqlglot's plain rendering): a
    column of this type is widened to :func:`pg_type` by the generated migration."""
    return exp.DataType.build(sql_type).sql(dialect="postgres")


def type_sql(col: ColumnSpec, dialect: str) -> str:
    """The column's declared type rendered for ``dialect`` (Postgres: :func:`pg_type`)."""
    if dialect == "postgres":
        return pg_type(col.type)
    return exp.DataType.build(col.type).sql(dialect=dialect)


def default_sql(col: ColumnSpec, dialect: str) -> str | None:
    """The column's DEFAULT expression rendered for ``dialect`` (None when absent)."""
    if col.default is None:
        return None
    return sqlglot.parse_one(col.default).sql(dialect=dialect)


def create_table_sql(ddl: str, dialect: str, schema: str | None = None,
                     extra_columns: str = "") -> str:
    """Re-render a parsed CREATE TABLE as ``CREATE TABLE IF NOT EXISTS`` for ``dialect``.

    Every identifier is quoted; ``extra_columns`` (column definitions in the default
    dialect, e.g. ``"_ts_hlc BIGINT NOT NULL DEFAULT 0"``) are appended.
    """
    create = sqlglot.parse_one(ddl)
    assert isinstance(create, exp.Create)
    create.set("exists", True)
    if extra_columns:
        extra = sqlglot.parse_one(f"CREATE TABLE x ({extra_columns})")
        create.this.expressions.extend(extra.this.expressions)
    if schema:
        create.this.this.set("db", exp.to_identifier(schema))
    if dialect == "postgres":
        for col in create.this.expressions:
            kind = col.args.get("kind") if isinstance(col, exp.ColumnDef) else None
            if kind is not None and not col.name.startswith("_ts_"):
                col.set("kind", exp.DataType.build(pg_type(kind.sql()), dialect="postgres"))
    for node in create.find_all(exp.Identifier):
        node.set("quoted", True)
    return create.sql(dialect=dialect)


def pk(spec: TableSpec) -> ColumnSpec:
    return spec.column(spec.primary_key)
