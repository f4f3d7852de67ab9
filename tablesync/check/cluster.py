"""One PostgreSQL cluster per check run, holding the project's generated supabase.sql.

Started through the devserver's :mod:`tablesync.devserver.postgres` (pgserver: a bundled
PostgreSQL 16), bootstrapped like Supabase (roles, ``auth.jwt()``), then the project's
``supabase.sql`` (generated from the same config by :func:`tablesync.sql.postgres.
schema_sql`, i.e. what ``tablesync generate`` writes) is applied once. Between examples
:meth:`Cluster.reset` empties the synced tables and tablesync's own server tables
(TRUNCATE: fast, keeps the functions, triggers and policies).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import psycopg

from tablesync.config import Project
from tablesync.errors import TablesyncError
from tablesync.model import EXITS_TABLE
from tablesync.sql import postgres as pg_sql
from tablesync.sql.base import ident, qualified

__all__ = ["Cluster", "SCRATCH", "SERVER_TABLES"]

SERVER_TABLES = ("tablesync_conflicts", EXITS_TABLE, "tablesync_replicas")
DATABASE = "tablesync_check"
# scratch files (the cluster's data, replicas' SQLite files) go to memory-backed /dev/shm
# where there is one: no fsync waits; all of it is thrown away after the run
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Cluster:
    """A running PostgreSQL with ``project``'s server schema; ``dsn`` is a superuser DSN
    (the "dashboard": triggers and RLS apply as they do for a service-role write)."""

    def __init__(self, project: Project, data_dir: str | Path | None = None,
                 dsn: str | None = None) -> None:
        self.project = project
        self._server: Any = None
        self._data_dir: Path | None = None
        self.on_close: list[Callable[[], None]] = []     # run before the cluster stops
        if dsn is None:
            from tablesync.devserver import postgres
            from tablesync.devserver.errors import DevServerError

            if data_dir is None:            # memory-backed where possible: no fsync waits
                data_dir = self._data_dir = Path(tempfile.mkdtemp(prefix="tablesync-check-pg-",
                                                                  dir=SCRATCH))
            try:
                self._server = postgres.start(data_dir)
                self._server.drop_database(DATABASE)
                dsn = self._server.create_database(DATABASE)
                postgres.bootstrap(dsn)
            except DevServerError as exc:
                self.close()
                raise TablesyncError(f"tablesync check: {exc}") from exc
        self.dsn = dsn
        self.schema_sql = pg_sql.schema_sql(project.tables, project.ddl)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SET synchronous_commit = off")      # a throwaway database
        try:
            self.conn.execute(self.schema_sql.encode())
        except psycopg.Error as exc:
            self.close()
            raise TablesyncError(f"tablesync check: the generated supabase.sql does not apply "
                                 f"to PostgreSQL: {str(exc).strip()[:300]}") from exc
        names = [qualified("public", t.name, "postgres") for t in project.tables]
        names += [qualified("public", t, "postgres") for t in SERVER_TABLES]
        self._truncate = f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"

    def reset(self) -> None:
        """Empty every synced table and tablesync's server tables."""
        self.conn.execute(self._truncate.encode())

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` as the superuser (the dashboard); rows if it returns any."""
        cur = self.conn.execute(query.encode(), params or None)
        return cur.fetchall() if cur.description else []

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``table`` (tombstones and every scope) as JSON objects, the form
        PostgREST gives."""
        q = (f"SELECT coalesce(json_agg(_s), '[]')::text FROM "
             f"(SELECT * FROM {qualified('public', table, 'postgres')}) AS _s")
        found = self.execute(q)
        return list(json.loads(found[0][0]))

    def conflicts(self) -> list[dict[str, Any]]:
        """The server's conflict log (``tablesync_conflicts``)."""
        out = self.execute("SELECT table_name, record_id, winner, loser FROM "
                           "public.tablesync_conflicts ORDER BY id")
        return [{"table": t, "record_id": r, "winner": w, "loser": lo} for t, r, w, lo in out]

    def column_ident(self, name: str) -> str:
        return ident(name, "postgres")

    def close(self) -> None:
        """Close the connection and stop the cluster this object started."""
        for close in self.on_close:
            close()
        self.on_close.clear()
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
