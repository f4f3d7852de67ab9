"""Issue 14 item 2: catch-up pages until an empty page, whatever the project's max_rows
(PostgREST cuts every response to it; hosted projects often set it below 1000)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tablesync.devserver.server import DevServer

from .stack import app_db, create_schema, create_users, engine_for

pytestmark = pytest.mark.postgres
A = "system-a"


def test_catch_up_gets_every_row_when_max_rows_is_below_the_page_size(
        pg_dsn: str, tmp_path: Path) -> None:
    create_schema(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, system_id, title) SELECT 't' || g, %s, 'x' "
                     "FROM generate_series(1, 250) AS g", (A,))
    srv = DevServer(dsn=pg_dsn, max_rows=100)
    srv.start()
    try:
        create_users(srv.info, (A,))
        with engine_for(tmp_path, srv.info, A) as e:
            summary = e.sync_once()
        assert summary.pulled == 250
        app = app_db(tmp_path, A)
        assert app.execute("SELECT count(*) FROM tasks").fetchone() == (250,)
    finally:
        srv.stop()
