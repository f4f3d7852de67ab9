"""Build the SQL of REST requests from a parsed :class:`Query` (pure; no I/O).

Every identifier goes through :class:`psycopg.sql.Identifier` and has been checked
against the catalog by the caller; every value is a query parameter (sent untyped, so
PostgreSQL casts it to the column's type, as PostgREST does). Results are aggregated
to JSON by PostgreSQL itself (``json_agg``), like PostgREST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from psycopg import sql

from tablesync.devserver.catalog import SCHEMA, Function, Table
from tablesync.devserver.rest_query import Condition, Filter, Logic, OrderTerm, Query, SelectItem

ALIAS = sql.Identifier("_t")
INSERTED = "_pgrst_inserted"
_CMP = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
        "like": "LIKE", "ilike": "ILIKE", "isdistinct": "IS DISTINCT FROM"}
_IS = {"null": "IS NULL", "not_null": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE",
       "unknown": "IS UNKNOWN"}

Params = list[Any]


def table_ident(table: Table) -> sql.Identifier:
    return sql.Identifier(SCHEMA, table.name)


def col(name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(ALIAS, sql.Identifier(name))


def select_list(table: Table, items: Sequence[SelectItem]) -> sql.Composable:
    """The projection; ``*`` expands to the table's columns (catalog order)."""
    parts: list[sql.Composable] = []
    for item in items:
        if item.column == "*":
            parts.extend(sql.SQL("{} AS {}").format(col(c), sql.Identifier(c))
                         for c in table.columns)
            continue
        expr: sql.Composable = col(item.column)
        if item.cast:
            expr = sql.SQL("CAST({} AS {})").format(expr, sql.SQL(item.cast))
        parts.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(item.alias or item.column)))
    return sql.SQL(", ").join(parts)


def condition(cond: Condition, params: Params) -> sql.Composable:
    """One filter or logic tree as SQL; appends its values to ``params``."""
    if isinstance(cond, Logic):
        joiner = sql.SQL(" AND " if cond.op == "and" else " OR ")
        inner = joiner.join(condition(c, params) for c in cond.items) if cond.items \
            else sql.SQL("TRUE" if cond.op == "and" else "FALSE")
        out: sql.Composable = sql.SQL("({})").format(inner)
    else:
        out = _filter(cond, params)
    return sql.SQL("NOT {}").format(out) if cond.negate else out


def _filter(f: Filter, params: Params) -> sql.Composable:
    target = col(f.column)
    if f.op == "is":
        return sql.SQL("({} {})").format(target, sql.SQL(_IS[str(f.value)]))
    if f.op == "in":
        if not f.value:
            return sql.SQL("FALSE")
        params.extend(f.value)
        marks = sql.SQL(", ").join(sql.Placeholder() for _ in f.value)
        return sql.SQL("({} IN ({}))").format(target, marks)
    params.append(f.value)
    return sql.SQL("({} {} %s)").format(target, sql.SQL(_CMP[f.op]))


def where(conds: Sequence[Condition], params: Params) -> sql.Composable:
    if not conds:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(condition(c, params) for c in conds)


def order_by(terms: Sequence[OrderTerm]) -> sql.Composable:
    if not terms:
        return sql.SQL("")
    parts = []
    for t in terms:
        text = " DESC" if t.desc else " ASC"
        if t.nulls:
            text += " NULLS FIRST" if t.nulls == "first" else " NULLS LAST"
        parts.append(col(t.column) + sql.SQL(text))
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(parts)


def read(table: Table, q: Query, limit: int) -> tuple[sql.Composed, Params]:
    """``SELECT count, json`` of one page of rows."""
    params: Params = []
    inner = sql.SQL("SELECT {} FROM {} AS {}{}{} LIMIT {} OFFSET {}").format(
        select_list(table, q.select), table_ident(table), ALIAS, where(q.where, params),
        order_by(q.order), sql.Literal(limit), sql.Literal(q.offset))
    return _aggregate(inner), params


def count(table: Table, q: Query) -> tuple[sql.Composed, Params]:
    params: Params = []
    stmt = sql.SQL("SELECT count(*) FROM {} AS {}{}").format(
        table_ident(table), ALIAS, where(q.where, params))
    return stmt, params


def _aggregate(inner: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT count(*), coalesce(json_agg(_s), '[]')::text FROM ({}) AS _s").format(
        inner)


def _from_cte(table: Table, items: Sequence[SelectItem], cte: str,
              rows: bool = True) -> sql.Composed:
    """``count, inserted count, json`` over a data-modifying CTE named ``cte``."""
    if not rows:  # return=minimal: no need to build the JSON of the affected rows
        return sql.SQL("SELECT count(*), count(*) FILTER (WHERE {ins}), '[]' FROM {cte}").format(
            ins=sql.Identifier(INSERTED), cte=sql.Identifier(cte))
    return sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {ins}), "
        "coalesce((SELECT json_agg(_s) FROM (SELECT {items} FROM {cte} AS {a}) AS _s), '[]')::text "
        "FROM {cte}").format(ins=sql.Identifier(INSERTED), items=select_list(table, items),
                             cte=sql.Identifier(cte), a=ALIAS)


def insert(table: Table, columns: Sequence[str], rows_json: str, q: Query,
           resolution: str | None, *, rows: bool = True) -> tuple[sql.Composed, Params]:
    """INSERT (or upsert) of the JSON array ``rows_json`` into ``columns``."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    src = sql.SQL(", ").join(sql.SQL("_r.{}").format(sql.Identifier(c)) for c in columns)
    head = sql.SQL("({}) ").format(cols) if columns else sql.SQL("")
    stmt = sql.SQL(
        "INSERT INTO {t} AS {a} {head}SELECT {src} FROM "
        "json_populate_recordset(NULL::{t}, %s::json) AS _r").format(
        t=table_ident(table), a=ALIAS, head=head, src=src)
    stmt += _on_conflict(table, columns, q, resolution)
    returning = sql.SQL(" RETURNING {}.*, ({}.xmax = 0) AS {}").format(
        ALIAS, ALIAS, sql.Identifier(INSERTED))
    full = sql.SQL("WITH _m AS ({}) ").format(stmt + returning) + _from_cte(
        table, q.select, "_m", rows)
    return full, [rows_json]


def _on_conflict(table: Table, columns: Sequence[str], q: Query,
                 resolution: str | None) -> sql.Composable:
    if resolution not in ("merge-duplicates", "ignore-duplicates"):
        return sql.SQL("")
    target = q.on_conflict or list(table.primary_key)
    head = sql.SQL(" ON CONFLICT ({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in target)) if target else sql.SQL(" ON CONFLICT")
    if resolution == "ignore-duplicates" or not columns:
        return head + sql.SQL(" DO NOTHING")
    sets = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                              for c in columns)
    return head + sql.SQL(" DO UPDATE SET ") + sets


def update(table: Table, columns: Sequence[str], row_json: str,
           q: Query, *, rows: bool = True) -> tuple[sql.Composed, Params]:
    """UPDATE the filtered rows with the values of the JSON object ``row_json``."""
    params: Params = [row_json]
    sets = sql.SQL(", ").join(sql.SQL("{c} = _r.{c}").format(c=sql.Identifier(c)) for c in columns)
    stmt = sql.SQL(
        "UPDATE {t} AS {a} SET {sets} FROM json_populate_record(NULL::{t}, %s::json) AS _r"
    ).format(t=table_ident(table), a=ALIAS, sets=sets)
    stmt += where(q.where, params)
    stmt += sql.SQL(" RETURNING {}.*, false AS {}").format(ALIAS, sql.Identifier(INSERTED))
    return sql.SQL("WITH _m AS ({}) ").format(stmt) + _from_cte(table, q.select, "_m", rows), params


def delete(table: Table, q: Query, *, rows: bool = True) -> tuple[sql.Composed, Params]:
    """DELETE the filtered rows."""
    params: Params = []
    stmt = sql.SQL("DELETE FROM {t} AS {a}").format(t=table_ident(table), a=ALIAS)
    stmt += where(q.where, params)
    stmt += sql.SQL(" RETURNING {}.*, false AS {}").format(ALIAS, sql.Identifier(INSERTED))
    return sql.SQL("WITH _m AS ({}) ").format(stmt) + _from_cte(table, q.select, "_m", rows), params


@dataclass(frozen=True)
class BodyField:
    """A json/jsonb argument read from the request body by PostgreSQL (``body -> key``):
    the body text is passed through as it came, never decoded and re-encoded in Python."""

    body: str
    key: str
    pg_type: str  # 'json' or 'jsonb'


def call(fn: Function, args: dict[str, Any], whole_body: Any = None,
         *, use_body: bool = False) -> tuple[sql.Composed, Params]:
    """``fn(a => %s, ...)`` with named arguments (or the whole body as one argument)."""
    ident = sql.Identifier(SCHEMA, fn.name)
    if use_body:
        return sql.SQL("{}(%s)").format(ident), [whole_body]
    parts: list[sql.Composable] = []
    params: Params = []
    for name, value in args.items():
        if isinstance(value, BodyField):
            cast = sql.SQL("jsonb" if value.pg_type == "jsonb" else "json")
            parts.append(sql.SQL("{} => (%s::{} -> {})").format(
                sql.Identifier(name), cast, sql.Literal(value.key)))
            params.append(value.body)
        else:
            parts.append(sql.SQL("{} => %s").format(sql.Identifier(name)))
            params.append(value)
    return sql.SQL("{}({})").format(ident, sql.SQL(", ").join(parts)), params


def rpc(fn: Function, call_sql: sql.Composable, limit: int, offset: int, *,
        table: Table | None = None, q: Query | None = None) -> tuple[sql.Composed, Params]:
    """Wrap a function call for its return shape (scalar / set / void); with ``table``
    (the row type of a SETOF function) the query's select, filters and order apply."""
    page = sql.SQL(" LIMIT {} OFFSET {}").format(sql.Literal(limit), sql.Literal(offset))
    params: Params = []
    if fn.returns_set and fn.returns_composite:
        if table is not None and q is not None:
            inner = sql.SQL("SELECT {} FROM {} AS {}{}{}").format(
                select_list(table, q.select), call_sql, ALIAS, where(q.where, params),
                order_by(q.order))
        else:
            inner = sql.SQL("SELECT * FROM {} AS {}").format(call_sql, ALIAS)
        return _aggregate(inner + page), params
    if fn.returns_set:
        return sql.SQL(
            "SELECT count(*), coalesce(json_agg(_s.v), '[]')::text FROM "
            "(SELECT v FROM {} AS v{}) AS _s").format(call_sql, page), params
    if fn.returns_void:
        return sql.SQL("SELECT 0, {}::text").format(call_sql), params
    return sql.SQL("SELECT 1, to_json({})::text").format(call_sql), params
