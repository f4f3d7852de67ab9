"""The PostgREST-compatible ``/rest/v1`` endpoints (tables and ``/rpc``).

Each request runs in one transaction on a connection logged in as ``authenticator``
(like PostgREST), switched to the JWT's role with ``set_config('role', ..., true)`` and
with ``request.jwt.claims`` set, so grants and RLS policies apply for real.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tablesync.devserver import rest_sql
from tablesync.devserver.catalog import SCHEMA, Catalog, Function, Table
from tablesync.devserver.errors import HTTPFailure, bad_query, pgrst, sqlstate_status
from tablesync.devserver.gateway import Caller, caller
from tablesync.devserver.rest_query import (RESERVED, Prefer, Query, QueryError, SelectItem,
                                            parse_prefer, parse_query)
from tablesync.devserver.settings import Settings

T = TypeVar("T")
JSON_TYPE = "application/json; charset=utf-8"
OBJECT_TYPE = "application/vnd.pgrst.object+json"

_GUCS = sql.SQL(
    "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('request.method', %s, true), set_config('request.path', %s, true), "
    "set_config('request.headers', %s, true), set_config('search_path', 'public, extensions', true), "
    "set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')), true)")


def _db_failure(exc: psycopg.Error, role: str) -> HTTPFailure:
    """PostgREST's mapping of a PostgreSQL error to HTTP."""
    state = exc.sqlstate
    if not state:
        return pgrst(503, "PGRST001", "Database client error. Retrying the connection.",
                     str(exc).strip() or None, headers={"Retry-After": "1"})
    diag = exc.diag
    status = sqlstate_status(state, role)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return pgrst(status, state, diag.message_primary or str(exc), diag.message_detail,
                 diag.message_hint, headers)


class RestService:
    """Serves tables and functions of schema ``public`` over PostgREST's protocol."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool,
                 admin_pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self.admin_pool = admin_pool
        self.catalog = Catalog()

    def routes(self) -> list[Route]:
        return [
            Route("/rest/v1/", self.root, methods=["GET", "HEAD"]),
            Route("/rest/v1/rpc/{fn}", self.rpc, methods=["GET", "POST", "HEAD"]),
            Route("/rest/v1/{table}", self.table_endpoint,
                  methods=["GET", "HEAD", "POST", "PATCH", "DELETE"]),
            Route("/rest/v1/{rest:path}", self.invalid_path,
                  methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"]),
        ]

    # -- plumbing -------------------------------------------------------------
    async def _run(self, who: Caller, request: Request,
                   work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                   *, read_only: bool) -> T:
        headers = json.dumps({k.lower(): v for k, v in request.headers.items()})
        try:
            async with self.pool.connection(timeout=10) as conn:
                if conn.read_only != read_only:
                    await conn.set_read_only(read_only)
                async with conn.transaction():
                    await conn.execute(_GUCS, (
                        who.role, json.dumps(who.claims), request.method,
                        request.url.path.removeprefix("/rest/v1"), headers,
                        self._statement_timeout(who.role)))
                    return await work(conn)
        except PoolTimeout as exc:
            raise pgrst(504, "PGRST003",
                        "Timed out acquiring connection from connection pool.") from exc
        except psycopg.Error as exc:
            raise _db_failure(exc, who.role) from exc

    def _statement_timeout(self, role: str) -> str | None:
        """The role's statement_timeout (as hosted sets it on the role: anon 3 s,
        authenticated 8 s), applied with SET LOCAL; None leaves the server's setting."""
        seconds = {"authenticated": self.settings.statement_timeout,
                   "anon": self.settings.anon_statement_timeout}.get(role)
        if not seconds or seconds <= 0:
            return None
        return f"{max(1, round(seconds * 1000))}ms"

    async def _reload(self) -> None:
        try:
            async with self.admin_pool.connection(timeout=10) as conn:
                await self.catalog.reload(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise pgrst(503, "PGRST002", "Could not query the database for the schema cache. "
                        "Retrying.", str(exc), headers={"Retry-After": "1"}) from exc

    async def _table(self, name: str) -> Table:
        table = self.catalog.tables.get(name)
        if table is None:
            await self._reload()
            table = self.catalog.tables.get(name)
        if table is None:
            raise pgrst(404, "PGRST205",
                        f"Could not find the table '{SCHEMA}.{name}' in the schema cache")
        return table

    async def _check_columns(self, table: Table, names: set[str]) -> Table:
        missing = sorted(n for n in names if n not in table.columns)
        if missing:
            await self._reload()
            table = self.catalog.tables.get(table.name, table)
            missing = sorted(n for n in names if n not in table.columns)
        if missing:
            raise pgrst(400, "42703", f"column {table.name}.{missing[0]} does not exist")
        return table

    async def _check_payload(self, table: Table, keys: Sequence[str]) -> Table:
        unknown = [k for k in keys if k not in table.columns]
        if unknown:
            await self._reload()
            table = self.catalog.tables.get(table.name, table)
            unknown = [k for k in keys if k not in table.columns]
        if unknown:
            raise pgrst(400, "PGRST204", f"Could not find the '{unknown[0]}' column of "
                        f"'{table.name}' in the schema cache")
        return table

    # -- endpoints ------------------------------------------------------------
    async def root(self, request: Request) -> Response:
        caller(request, self.settings)
        return Response("{}", media_type=JSON_TYPE)

    async def invalid_path(self, request: Request) -> Response:
        caller(request, self.settings)
        raise pgrst(404, "PGRST125", "Invalid path specified in request URL")

    async def table_endpoint(self, request: Request) -> Response:
        who = caller(request, self.settings)
        try:
            q = parse_query(request.query_params.multi_items())
        except QueryError as exc:
            raise bad_query(str(exc), exc.details) from exc
        prefer = parse_prefer(request.headers.getlist("prefer"))
        table = await self._table(request.path_params["table"])
        table = await self._check_columns(table, q.column_names())
        method = request.method
        if method in ("GET", "HEAD"):
            return await self._read(who, request, table, q, prefer)
        if method == "POST":
            return await self._insert(who, request, table, q, prefer)
        return await self._mutate(who, request, table, q, prefer)

    def _limits(self, request: Request, q: Query) -> tuple[int, int]:
        limit = self.settings.max_rows if q.limit is None else min(q.limit, self.settings.max_rows)
        offset = q.offset
        rng = request.headers.get("range")
        if rng and request.method in ("GET", "HEAD"):
            lo, _, hi = rng.strip().partition("-")
            if lo.isdigit():
                offset = int(lo)
                if hi.isdigit():
                    limit = min(limit, max(0, int(hi) - offset + 1))
        return limit, offset

    async def _read(self, who: Caller, request: Request, table: Table, q: Query,
                    prefer: Prefer) -> Response:
        limit, q.offset = self._limits(request, q)
        stmt, params = rest_sql.read(table, q, limit)

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[int, str, int | None]:
            n, body = await _fetch(conn, stmt, params)
            total = None
            if prefer.count in ("exact", "planned", "estimated"):
                cstmt, cparams = rest_sql.count(table, q)
                row = await (await conn.execute(cstmt, cparams)).fetchone()
                total = int(row[0]) if row else 0
            return n, body, total

        n, body, total = await self._run(who, request, work, read_only=True)
        return _page_response(request, n, body, total, q.offset)

    async def _insert(self, who: Caller, request: Request, table: Table, q: Query,
                      prefer: Prefer) -> Response:
        rows = await _json_rows(request)
        columns = q.columns if q.columns is not None else _uniform_keys(rows)
        table = await self._check_payload(table, columns)
        batches = _batches(rows, columns, q.columns is not None and prefer.missing == "default")
        plans = [rest_sql.insert(table, cols, json.dumps(chunk), q, prefer.resolution,
                                 rows=prefer.representation)
                 for cols, chunk in batches]

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, list[Any]]:
            total, inserted, out = 0, 0, []
            for stmt, params in plans:
                n, ins, body = await _fetch3(conn, stmt, params)
                total, inserted = total + n, inserted + ins
                if prefer.representation:
                    out.extend(json.loads(body))
            _check_single(request, total)
            return total, inserted, out

        total, inserted, out = await self._run(who, request, work, read_only=False)
        status = 200 if prefer.resolution == "merge-duplicates" and total and not inserted else 201
        return _mutation_response(request, prefer, status, out, total, "POST")

    async def _mutate(self, who: Caller, request: Request, table: Table, q: Query,
                      prefer: Prefer) -> Response:
        verb = "UPDATE" if request.method == "PATCH" else "DELETE"
        if not q.where:
            raise pgrst(400, "21000", f"{verb} requires a WHERE clause")
        if verb == "UPDATE":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise pgrst(400, "PGRST102", "Empty or invalid json")
            table = await self._check_payload(table, list(body))
            if not body:
                return _mutation_response(request, prefer, 200, [], 0, "PATCH")
            stmt, params = rest_sql.update(table, list(body), json.dumps(body), q,
                                           rows=prefer.representation)
        else:
            stmt, params = rest_sql.delete(table, q, rows=prefer.representation)

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[int, list[Any]]:
            n, _ins, text = await _fetch3(conn, stmt, params)
            if prefer.handling == "strict" and prefer.max_affected is not None \
                    and n > prefer.max_affected:
                raise pgrst(400, "PGRST124", "Query result exceeds max-affected preference "
                            "constraint", f"The query affects {n} rows")
            _check_single(request, n)
            return n, json.loads(text) if prefer.representation else []

        n, out = await self._run(who, request, work, read_only=False)
        return _mutation_response(request, prefer, 200, out, n, request.method)

    async def rpc(self, request: Request) -> Response:
        who = caller(request, self.settings)
        name = request.path_params["fn"]
        fn, args, filter_params = await self._rpc_target(request, name)
        use_body = _takes_body(fn)
        if not use_body and not isinstance(args, dict):
            raise pgrst(400, "PGRST102", "Empty or invalid json")
        raw = await _raw_object_body(request)
        values = {} if use_body else \
            {k: _rpc_arg(v, fn.arg_types[fn.args.index(k)], k, raw) for k, v in args.items()}
        whole = (raw if raw is not None else json.dumps(args)) if use_body else None
        call_sql, params = rest_sql.call(fn, values, whole, use_body=use_body)
        try:
            q = parse_query(filter_params)
        except QueryError as exc:
            raise bad_query(str(exc), exc.details) from exc
        table = await self._rpc_result_table(fn, q)
        limit, offset = self._limits(request, q)
        q.offset = offset
        stmt, extra = rest_sql.rpc(fn, call_sql, limit, offset, table=table, q=q)

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[int, str]:
            return await _fetch(conn, stmt, [*params, *extra])

        n, body_text = await self._run(who, request, work, read_only=request.method != "POST")
        if fn.returns_void:
            return Response(status_code=204)
        if fn.returns_set:
            return _page_response(request, n, body_text, None, offset)
        return Response(body_text, media_type=JSON_TYPE)

    async def _rpc_target(self, request: Request,
                          name: str) -> tuple[Function, Any, list[tuple[str, str]]]:
        """The function, its arguments and the query parameters left for filtering."""
        items = request.query_params.multi_items()
        if request.method == "POST":
            body = await _json_body(request, allow_empty=True)
            args = body if body is not None else {}
            return await self._function(name, args), args, items
        candidates = {k: v for k, v in items if k not in RESERVED}
        for attempt in range(2):
            for fn in self.catalog.functions.get(name, []):
                if "" in fn.args:
                    continue
                args = {k: v for k, v in candidates.items() if k in fn.args}
                rest_items = [(k, v) for k, v in items if k not in args]
                return fn, args, rest_items
            if attempt == 0:
                await self._reload()
        return await self._function(name, candidates), candidates, []

    async def _rpc_result_table(self, fn: Function, q: Query) -> Table | None:
        """The table a set-returning function returns rows of, when filters need it."""
        plain = q.select == [SelectItem("*")]
        if not q.where and not q.order and plain:
            return None
        table = self.catalog.tables.get(fn.returns.split(".")[-1].strip('"')) \
            if fn.returns_set and fn.returns_composite else None
        if table is None:
            raise bad_query(f'"filters, order or select on the result of {fn.name}"',
                            "only supported for functions returning SETOF a table type")
        return await self._check_columns(table, q.column_names())

    async def _function(self, name: str, args: Any) -> Function:
        keys = set(args) if isinstance(args, dict) else set()
        for attempt in range(2):
            for fn in self.catalog.functions.get(name, []):
                if _matches(fn, keys, args):
                    return fn
            if attempt == 0:
                await self._reload()
        listed = ", ".join(sorted(keys))
        raise pgrst(404, "PGRST202",
                    f"Could not find the function {SCHEMA}.{name}({listed}) in the schema cache",
                    f"Searched for the function {SCHEMA}.{name} with parameters {listed} or with "
                    "a single unnamed json/jsonb parameter, but no matches were found in the "
                    "schema cache.")


def _takes_body(fn: Function) -> bool:
    """A single unnamed json/jsonb parameter receives the whole body."""
    return len(fn.args) == 1 and fn.args[0] == "" and fn.arg_types[0] in ("json", "jsonb")


def _matches(fn: Function, keys: set[str], args: Any) -> bool:
    if _takes_body(fn):
        return True
    return keys <= set(fn.args) and "" not in fn.args and isinstance(args, dict)


def _rpc_arg(value: Any, pg_type: str, key: str, raw: str | None) -> Any:
    """An argument's parameter: a json/jsonb value is taken from the raw body in SQL
    (``body -> key``, as PostgREST passes the body through) instead of re-encoded here."""
    if raw is not None and value is not None and pg_type in ("json", "jsonb"):
        return rest_sql.BodyField(raw, key, pg_type)
    return _arg_value(value, pg_type)


async def _raw_object_body(request: Request) -> str | None:
    """The POST body as text when it is a (parsed, valid) UTF-8 JSON object, else None."""
    if request.method != "POST":
        return None
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.lstrip()[:1] == "{" else None


def _arg_value(value: Any, pg_type: str) -> Any:
    """A JSON argument as an untyped text parameter PostgreSQL casts to ``pg_type``."""
    if value is None:
        return None
    if pg_type in ("json", "jsonb"):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "{" + ",".join(_array_item(v) for v in value) + "}"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _fetch(conn: psycopg.AsyncConnection[Any], stmt: sql.Composed,
                 params: Sequence[Any]) -> tuple[int, str]:
    row = await (await conn.execute(stmt, params)).fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def _fetch3(conn: psycopg.AsyncConnection[Any], stmt: sql.Composed,
                  params: Sequence[Any]) -> tuple[int, int, str]:
    row = await (await conn.execute(stmt, params)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


async def _json_body(request: Request, *, allow_empty: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return None
        raise pgrst(400, "PGRST102", "Empty or invalid json")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise pgrst(400, "PGRST102", "Empty or invalid json") from exc


async def _json_rows(request: Request) -> list[dict[str, Any]]:
    body = await _json_body(request)
    rows = body if isinstance(body, list) else [body]
    if not all(isinstance(r, dict) for r in rows):
        raise pgrst(400, "PGRST102", "Empty or invalid json")
    return rows


def _uniform_keys(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    first = set(keys)
    if any(set(r) != first for r in rows[1:]):
        raise pgrst(400, "PGRST102", "All object keys must match")
    return keys


def _batches(rows: list[dict[str, Any]], columns: list[str],
             missing_default: bool) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """One batch, or (``missing=default``) runs of rows that carry the same columns."""
    if not missing_default:
        return [(columns, rows)] if rows else []
    out: list[tuple[list[str], list[dict[str, Any]]]] = []
    for row in rows:
        cols = [c for c in columns if c in row]
        if out and out[-1][0] == cols:
            out[-1][1].append(row)
        else:
            out.append((cols, [row]))
    return out


def _wants_object(request: Request) -> bool:
    return OBJECT_TYPE in request.headers.get("accept", "")


def _check_single(request: Request, n: int) -> None:
    if _wants_object(request) and n != 1:
        raise pgrst(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
                    f"The result contains {n} rows")


def _content_range(n: int, offset: int, total: int | None) -> str:
    tail = "*" if total is None else str(total)
    return f"{offset}-{offset + n - 1}/{tail}" if n else f"*/{tail}"


def _page_response(request: Request, n: int, body: str, total: int | None,
                   offset: int) -> Response:
    if total is not None and offset > 0 and offset >= total and n == 0:
        raise pgrst(416, "PGRST103", "Requested range not satisfiable",
                    f"An offset of {offset} was requested, but there are only {total} rows.")
    headers = {"Content-Range": _content_range(n, offset, total)}
    status = 206 if total is not None and n < total and n > 0 else 200
    if _wants_object(request):
        _check_single(request, n)
        body = json.dumps(json.loads(body)[0])
        status = 200
    if request.method == "HEAD":
        body = ""
    return Response(body, status_code=status, headers=headers,
                    media_type=OBJECT_TYPE if _wants_object(request) else JSON_TYPE)


def _mutation_response(request: Request, prefer: Prefer, status: int, rows: list[Any],
                       n: int, method: str) -> Response:
    applied = [f"return={prefer.return_}"] if prefer.return_ != "minimal" else []
    if prefer.resolution and method == "POST":
        applied.append(f"resolution={prefer.resolution}")
    headers = {"Preference-Applied": ", ".join(applied)} if applied else {}
    if prefer.count == "exact":
        headers["Content-Range"] = f"*/{n}" if method == "DELETE" else _content_range(n, 0, n)
    if not prefer.representation:
        return Response(status_code=status if method == "POST" else 204, headers=headers)
    if _wants_object(request):
        return Response(json.dumps(rows[0]), status_code=status, headers=headers,
                        media_type=OBJECT_TYPE)
    return Response(json.dumps(rows), status_code=status, headers=headers, media_type=JSON_TYPE)
