"""Quoting helpers shared by the dialect generators: every identifier goes through sqlglot."""

from __future__ import annotations

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


def type_sql(col: ColumnSpec, dialect: str) -> str:
    """The column's declared type rendered for ``dialect``."""
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
    for node in create.find_all(exp.Identifier):
        node.set("quoted", True)
    return create.sql(dialect=dialect)


def pk(spec: TableSpec) -> ColumnSpec:
    return spec.column(spec.primary_key)
