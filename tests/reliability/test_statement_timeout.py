"""Issue 14 item 2: a statement timeout (hosted Supabase stops `authenticated` statements
after 8 s: HTTP 500, SQLSTATE 57014) halves the push batch, down to one row, then parks
that row with the reason; the batch is never resent unchanged for ever.

Real PostgreSQL: the devserver's per-request ``statement_timeout`` for ``authenticated``
(``--statement-timeout``, hosted: 8 s) is 1 s here, and a trigger makes rows titled ``slow...`` cost 0.1 s each and the row
titled ``hopeless`` 1.5 s."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tablesync.devserver.server import DevServer

from .stack import app_db, create_schema, create_users, engine_for, pg

pytestmark = pytest.mark.postgres
A = "system-a"

SLOW_TRIGGER = """
CREATE FUNCTION public.slow_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.title = 'hopeless' THEN PERFORM pg_sleep(1.5);
  ELSIF NEW.title LIKE 'slow%' THEN PERFORM pg_sleep(0.1);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER slow_rows BEFORE INSERT OR UPDATE ON public.tasks
  FOR EACH ROW EXECUTE FUNCTION public.slow_rows();
"""


def test_a_statement_timeout_halves_the_batch_then_parks_the_one_row(
        pg_dsn: str, tmp_path: Path) -> None:
    create_schema(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SLOW_TRIGGER)
    srv = DevServer(dsn=pg_dsn, statement_timeout=1)     # hosted: 8 s for authenticated
    srv.start()
    try:
        create_users(srv.info, (A,))
        with engine_for(tmp_path, srv.info, A, batch_size=40) as e:
            app = app_db(tmp_path, A)
            app.executemany("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                            [(f"s{i:02d}", A, f"slow {i}") for i in range(30)])
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('h', ?, 'hopeless')",
                        (A,))
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('z', ?, 'canary')",
                        (A,))
            summary = e.sync_once()
            parked = {p["record_id"]: p["reason"] for p in e.store.parked()}
            assert set(parked) == {"h"} and "57014" in parked["h"], parked
            assert summary.parked == 1
            assert e.store.stats().depth == 0
        ids = {r[0] for r in pg(srv.info.dsn, "SELECT id FROM tasks")}
        assert ids == {f"s{i:02d}" for i in range(30)} | {"z"}
    finally:
        srv.stop()
