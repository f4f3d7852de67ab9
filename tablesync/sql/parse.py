"""Parse ``schemas/*.sql`` (one CREATE TABLE each) into :class:`~tablesync.model.TableSpec`.

Identifier policy (see docs/generate.md): a table or column name may be any identifier a
schema can declare (reserved words such as ``order`` or ``user``, mixed case, spaces),
since every name is quoted wherever it is emitted (SQLite, Postgres, PostgREST query
strings, Realtime filters). Refused by name: tablesync's own prefixes (``_ts_``,
``_tablesync``, ``tablesync_``) and ``sync_queue``, the empty name, double quotes and
control characters, and names over PostgreSQL's 63-byte limit (40 bytes for tables, to
leave room for ``tablesync_apply_`` and trigger suffixes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from tablesync.errors import ConfigError
from tablesync.model import ColumnSpec, ForeignKey

_BAD_CHARS = re.compile(r'["\x00-\x1f\x7f]')
MAX_TABLE_NAME = 40  # bytes: leaves room for "tablesync_apply_" and trigger suffixes in 63
MAX_COLUMN_NAME = 63

OWN_PREFIXES = ("_ts_", "_tablesync", "tablesync_")
OWN_NAMES = frozenset({"sync_queue"})


@dataclass(frozen=True)
class ParsedTable:
    """What one schema file declares (before sync.toml settings are joined in)."""

    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...]
    ddl: str  # the CREATE TABLE, normalised by sqlglot (default dialect)


def check_identifier(name: str, what: str, location: str) -> None:
    """Refuse (by name) any identifier outside the policy in the module docstring."""
    limit = MAX_TABLE_NAME if what == "table" else MAX_COLUMN_NAME
    if name.startswith(OWN_PREFIXES) or (what == "table" and name in OWN_NAMES):
        raise ConfigError(f"{what} name {name!r} uses a prefix or name reserved for tablesync "
                          f"({', '.join(OWN_PREFIXES)}, sync_queue)", location=location,
                          hint="rename it")
    if not name or name != name.strip() or _BAD_CHARS.search(name):
        raise ConfigError(f"{what} name {name!r} is not allowed: it is empty, starts or ends "
                          "with a space, or holds a double quote or a control character",
                          location=location, hint="rename it")
    if len(name.encode()) > limit:
        raise ConfigError(f"{what} name {name!r} is longer than {limit} bytes",
                          location=location)


def parse_schema(sql: str, location: str) -> ParsedTable:
    """Parse one schema file's text; ``location`` names the file in errors."""
    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ConfigError(f"SQL syntax error: {first}", location=location) from exc
    if len(statements) != 1 or not _is_create_table(statements[0]):
        raise ConfigError(f"expected exactly one CREATE TABLE statement, found "
                          f"{_describe(statements)}", location=location)
    create = statements[0]
    assert isinstance(create, exp.Create)
    schema = create.this
    if not isinstance(schema, exp.Schema) or not isinstance(schema.this, exp.Table):
        raise ConfigError("CREATE TABLE without a column list", location=location)
    table = schema.this
    if table.args.get("db") or table.args.get("catalog"):
        raise ConfigError(f"table {table.sql()} must not name a schema/database",
                          location=location, hint="tables live in public (Postgres) / main")
    name = table.name
    check_identifier(name, "table", location)
    columns, pk, fks = _columns(schema, f"{location}: table {name}")
    return ParsedTable(name, columns, pk, fks, create.sql())


def _is_create_table(stmt: exp.Expr) -> bool:
    return isinstance(stmt, exp.Create) and str(stmt.args.get("kind", "")).upper() == "TABLE"


def _describe(statements: list[exp.Expr]) -> str:
    if not statements:
        return "nothing"
    kinds = [type(s).__name__.upper() for s in statements]
    return f"{len(statements)} statement(s): {', '.join(kinds[:5])}"


def _columns(
    schema: exp.Schema, location: str
) -> tuple[tuple[ColumnSpec, ...], tuple[str, ...], tuple[ForeignKey, ...]]:
    cols: list[ColumnSpec] = []
    pk: list[str] = []
    fks: list[ForeignKey] = []
    for item in schema.expressions:
        if isinstance(item, exp.ColumnDef):
            col, is_pk, fk = _column(item, location)
            cols.append(col)
            pk += [col.name] if is_pk else []
            fks += [fk] if fk else []
        elif isinstance(item, exp.PrimaryKey):
            pk += [_ident_name(e) for e in item.expressions]
        elif isinstance(item, exp.ForeignKey):
            fks.append(_table_fk(item, location))
    names = [c.name for c in cols]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"column {dupes[0]!r} is declared twice", location=location)
    if any(n not in names for n in pk):
        raise ConfigError(f"primary key names unknown column(s) {pk}", location=location)
    not_null = {n for n in pk}
    cols = [ColumnSpec(c.name, c.type, c.nullable and c.name not in not_null, c.default)
            for c in cols]
    return tuple(cols), tuple(pk), tuple(fks)


def _column(item: exp.ColumnDef, location: str) -> tuple[ColumnSpec, bool, ForeignKey | None]:
    name = item.name
    check_identifier(name, "column", f"{location} column {name}")
    kind = item.args.get("kind")
    if kind is None:
        raise ConfigError(f"column {name!r} has no type", location=location,
                          hint="declare a type, e.g. TEXT or INTEGER")
    try:
        exp.DataType.build(kind.sql())          # what every generator renders it from
    except (SqlglotError, ValueError) as exc:
        raise ConfigError(f"column {name!r}: type {kind.sql()!r} cannot be synced",
                          location=location,
                          hint="use a type of docs/types.md (e.g. INTEGER instead of SERIAL, "
                               "NUMERIC(12,2) instead of MONEY)") from exc
    nullable, default, is_pk, fk = True, None, False, None
    for cons in item.constraints:
        k = cons.args.get("kind")
        if isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null"):
            nullable = False
        elif isinstance(k, exp.DefaultColumnConstraint):
            default = k.this.sql()
        elif isinstance(k, exp.PrimaryKeyColumnConstraint):
            is_pk = True
        elif isinstance(k, exp.Reference):
            fk = _ref(k, (name,), location)
    return ColumnSpec(name, kind.sql(), nullable, default), is_pk, fk


def _ref(ref: exp.Reference, columns: tuple[str, ...], location: str) -> ForeignKey:
    target = ref.this
    if isinstance(target, exp.Schema):
        table = target.this.name
        ref_cols = tuple(_ident_name(e) for e in target.expressions)
    else:
        table, ref_cols = target.name, ()
    if not ref_cols:
        raise ConfigError(f"foreign key {columns} -> {table} must name the referenced column",
                          location=location, hint=f"write REFERENCES {table} (id)")
    return ForeignKey(columns, table, ref_cols)


def _table_fk(item: exp.ForeignKey, location: str) -> ForeignKey:
    cols = tuple(_ident_name(e) for e in item.expressions)
    ref = item.args.get("reference")
    if not isinstance(ref, exp.Reference):
        raise ConfigError("FOREIGN KEY without REFERENCES", location=location)
    return _ref(ref, cols, location)


def _ident_name(e: exp.Expression) -> str:
    return e.name if hasattr(e, "name") else str(e)
