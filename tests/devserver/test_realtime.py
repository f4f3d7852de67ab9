"""Realtime service end to end: real PostgreSQL, real uvicorn on 127.0.0.1, real websockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import psycopg
import pytest
import websockets
from realtime_harness import Phoenix, RealtimeServer, token

pytestmark = pytest.mark.postgres

ITEMS_SQL = """
CREATE TABLE public.items (
  id bigint PRIMARY KEY,
  system_id text NOT NULL,
  title text,
  n integer,
  body text
);
ALTER TABLE public.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY items_read ON public.items FOR SELECT TO authenticated
  USING (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
ALTER PUBLICATION supabase_realtime ADD TABLE public.items;
"""


def sql(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode() if params is None else statement, params)


@pytest.fixture
def db(pg_dsn: str) -> str:
    sql(pg_dsn, ITEMS_SQL)
    return pg_dsn


@pytest.fixture
def server(db: str) -> Iterator[RealtimeServer]:
    srv = RealtimeServer(db).start()
    yield srv
    srv.stop()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def connect(server: RealtimeServer, vsn: str = "1.0.0",
                  apikey: str | None = None) -> Phoenix:
    ws = await websockets.connect(server.ws_url(apikey, vsn))
    return Phoenix(ws, vsn)


CHANGES_A = [{"event": "*", "schema": "public", "table": "items", "filter": "system_id=eq.A"}]


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
def test_frames_heartbeat_join_system_and_event(server: RealtimeServer, db: str,
                                                vsn: str) -> None:
    async def main() -> None:
        ph = await connect(server, vsn)
        ref = await ph.send("phoenix", "heartbeat", {})
        hb = await ph.recv()
        assert hb["event"] == "phx_reply" and hb["ref"] == ref and hb["topic"] == "phoenix"
        assert hb["payload"] == {"status": "ok", "response": {}}
        join_ref, reply = await ph.join("realtime:sync-items", CHANGES_A,
                                        token(system_id="A"))
        entry = reply["payload"]["response"]["postgres_changes"][0]
        assert {k: v for k, v in entry.items() if k != "id"} == CHANGES_A[0]
        assert isinstance(entry["id"], int) and 0 <= entry["id"] < 2**27
        system = await ph.recv()
        assert system["event"] == "system" and system["ref"] is None
        assert system["payload"] == {"extension": "postgres_changes", "status": "ok",
                                     "message": "Subscribed to PostgreSQL",
                                     "channel": "sync-items"}
        sql(db, "INSERT INTO items (id, system_id, title, n) VALUES (1, 'A', 'x', 5)")
        event = await ph.recv()
        assert event["event"] == "postgres_changes" and event["ref"] is None
        if vsn == "2.0.0":
            assert reply["raw"][:4] == [join_ref, join_ref, "realtime:sync-items", "phx_reply"]
            assert system["raw"][:2] == [join_ref, None]
            assert event["raw"][:2] == [None, None]
        else:
            assert "join_ref" not in reply["raw"] and "join_ref" not in event["raw"]
        assert event["payload"]["ids"] == [entry["id"]]
        data = event["payload"]["data"]
        assert data["type"] == "INSERT" and data["schema"] == "public"
        assert data["table"] == "items" and data["errors"] is None
        assert data["record"] == {"id": 1, "system_id": "A", "title": "x", "n": 5, "body": None}
        assert "old_record" not in data
        assert data["columns"] == [{"name": "id", "type": "int8"},
                                   {"name": "system_id", "type": "text"},
                                   {"name": "title", "type": "text"},
                                   {"name": "n", "type": "int4"},
                                   {"name": "body", "type": "text"}]
        assert data["commit_timestamp"].endswith("Z") and len(data["commit_timestamp"]) == 24
        await ph.ws.close()

    run(main())
