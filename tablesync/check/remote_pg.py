"""A :class:`~tablesync.remote.base.Remote` that calls the generated SQL directly.

What PostgREST would run for the engine, without HTTP: every call is one statement as
role ``authenticated`` with ``request.jwt.claims`` set (``app_metadata.system_id`` = the
replica's system id), so the project's RLS policies, grants, triggers and apply functions
run exactly as they do behind Supabase's REST API:

* ``apply``: ``SELECT public.tablesync_apply_<table>(rows)``;
* ``watermark``: ``SELECT public.tablesync_watermark()``;
* ``pull_page``: PostgREST's ``GET /<table>?<scope>=eq.<id>&_ts_xid=gte.<c>&_ts_seq=gt.<s>
  &order=_ts_seq.asc&limit=<n>``, aggregated by ``json_agg`` as PostgREST does.

SQL errors map to the same typed errors as over HTTP (PostgREST's SQLSTATE -> status, then
:func:`~tablesync.remote.base.error_for_status`). Sign-in and refresh are not needed (no
tokens): they raise.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Mapping, Sequence

import psycopg

from tablesync.errors import AuthError, PayloadError, RemoteError, TransientRemoteError
from tablesync.model import TableSpec
from tablesync.remote.base import (MAX_PAGE, ApplyOutcome, EncodedRows, Page, error_for_status,
                                   page_of, parse_outcomes)
from tablesync.sql.base import ident, qualified
from tablesync.sql.postgres import apply_function_name
from tablesync.vault import Secret, Tokens

__all__ = ["PgRemote"]

D = "postgres"
# Session-wide: the connection belongs to one system id for its whole life, so the role and
# the claims are set once; each call is then one autocommit statement (one transaction, as
# PostgREST runs one per request).
_SESSION = ("SELECT set_config('role', 'authenticated', false), "
            "set_config('request.jwt.claims', %s, false), "
            "set_config('search_path', 'public, extensions', false), "
            "set_config('synchronous_commit', 'off', false)")


class PgRemote:
    """The REST side of the project for one system id, over one psycopg connection.

    Args:
        dsn: the cluster's DSN (a superuser: the role is switched per transaction).
        system_id: the JWT's ``app_metadata.system_id`` (RLS scope and version origin).
        tables: specs by name (pulled rows are validated like RestRemote does).
        on_apply: called with ``(table, rows, outcomes)`` after every apply (the check
            records which versions the server accepted).
    """

    def __init__(self, dsn: str, system_id: str, tables: Mapping[str, TableSpec], *,
                 on_apply: Callable[[str, Sequence[Mapping[str, Any]], list[ApplyOutcome]],
                                    None] | None = None) -> None:
        self.system_id = system_id
        self.tables = dict(tables)
        self.on_apply: Callable[[str, Sequence[Mapping[str, Any]], list[ApplyOutcome]],
                                None] | None = on_apply
        self.down = False                   # an offline replica: every call fails
        self._claims = json.dumps({"role": "authenticated", "sub": f"check-{system_id}",
                                   "aud": "authenticated",
                                   "app_metadata": {"system_id": system_id}})
        self._lock = threading.Lock()
        self._conn = psycopg.connect(dsn, autocommit=True)
        # (synchronous_commit off: a throwaway database, commits need not wait for the disk)
        self._conn.execute(_SESSION, (self._claims,))

    def __repr__(self) -> str:
        return f"PgRemote({self.system_id!r})"

    def close(self) -> None:
        self._conn.close()

    def probe(self) -> bool:
        return not self.down

    def sign_in(self, email: str, password: Secret) -> Tokens:
        raise AuthError("tablesync check: no sign-in (claims are set per transaction)")

    def refresh(self, refresh_token: Secret) -> Tokens:
        raise AuthError("tablesync check: no refresh (claims are set per transaction)")

    def _run(self, what: str, query: str, params: Sequence[Any]) -> Any:
        """One statement (its own transaction) as ``authenticated`` with this system's
        claims; the first column of the first row."""
        if self.down:
            raise TransientRemoteError(f"{what}: offline (tablesync check)")
        with self._lock:
            try:
                row = self._conn.execute(query.encode(), params or None).fetchone()
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if not state:
                    raise TransientRemoteError(f"{what}: database error: {exc}") from exc
                # PostgREST's SQLSTATE -> HTTP status table, kept in the devserver
                from tablesync.devserver.errors import sqlstate_status

                body = {"code": state, "message": exc.diag.message_primary or str(exc)}
                raise error_for_status(sqlstate_status(state, "authenticated"), body,
                                       where=what) from exc
        return row[0] if row else None

    def apply(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[ApplyOutcome]:
        """``tablesync_apply_<table>(rows)``; one outcome per row."""
        if not rows:
            return []
        if isinstance(rows, EncodedRows) and rows.body:
            body = rows.body.decode("utf-8")
        else:
            try:
                body = json.dumps({"rows": list(rows)}, allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise RemoteError(f"apply {table}: the rows cannot be sent as JSON ({exc})",
                                  status=400) from exc
        fn = qualified("public", apply_function_name(table), D)
        found = self._run(f"apply {table}", f"SELECT {fn}((%s::jsonb) -> 'rows')::text",
                          (body,))
        answer = json.loads(found) if isinstance(found, str) else found
        pk = self.tables[table].primary_key if table in self.tables else "id"
        outcomes = parse_outcomes(table, rows, answer, pk)
        if self.on_apply is not None:
            self.on_apply(table, rows, outcomes)
        return outcomes

    def watermark(self) -> int:
        value = self._run("watermark", "SELECT public.tablesync_watermark()", ())
        if not isinstance(value, int) or value < 0:
            raise PayloadError(f"watermark: expected a non-negative integer, got {value!r:.60}")
        return value

    def pull_page(self, table: str, scope: str, system_id: str, cursor: int,
                  after_seq: int, limit: int = MAX_PAGE) -> Page:
        """PostgREST's catch-up GET, as SQL (same filter, order, limit and JSON)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        q = (f"SELECT coalesce(json_agg(_s), '[]')::text FROM (SELECT * FROM "
             f"{qualified('public', table, D)} WHERE {ident(scope, D)} = %s AND "
             f"_ts_xid >= %s AND _ts_seq > %s ORDER BY _ts_seq ASC LIMIT {limit}) AS _s")
        found = self._run(f"pull {table}", q, (system_id, int(cursor), int(after_seq)))
        body = json.loads(found) if isinstance(found, str) else []
        return page_of(table, self.tables.get(table), body)

