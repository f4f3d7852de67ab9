"""Start a real PostgreSQL server by itself and apply Supabase's bootstrap.

Uses ``pgserver`` from PyPI (bundles PostgreSQL 16, works as root, starts in about a
second), so a fresh machine with only Python needs nothing from the distribution.
The test suite, the devserver and the benchmarks all start PostgreSQL through here.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tablesync.devserver.errors import DevServerError

BOOTSTRAP_SQL = "bootstrap.sql"


def bootstrap_sql() -> str:
    """The SQL that creates what Supabase provides (roles, auth helpers, publication)."""
    return importlib.resources.files("tablesync.devserver").joinpath(BOOTSTRAP_SQL).read_text()


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster; ``dsn(db)`` gives a libpq URI for a database."""

    data_dir: Path
    _server: Any = field(repr=False)
    _owns_dir: bool = False

    @property
    def socket_dir(self) -> str:
        return str(self._server.get_uri()).split("host=")[-1]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally from ``template``) and return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = stmt + sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(stmt)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (and remove its data if it was a temporary one)."""
        try:
            self._server.cleanup()
        finally:
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)


def start(data_dir: str | os.PathLike[str] | None = None) -> PostgresServer:
    """Start (or reuse) a PostgreSQL cluster in ``data_dir``; a temporary one if None."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DevServerError(
            "PostgreSQL support is not installed", hint="pip install 'tablesync[server]'"
        ) from exc
    owns = data_dir is None
    path = Path(data_dir or tempfile.mkdtemp(prefix="tablesync-pg-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:
        raise DevServerError(f"could not start PostgreSQL in {path}: {exc}") from exc
    return PostgresServer(data_dir=path, _server=server, _owns_dir=owns)


def bootstrap(dsn: str) -> None:
    """Apply :func:`bootstrap_sql` to the database at ``dsn`` (idempotent)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(bootstrap_sql().encode())
