"""Broadcast from Database and private channels (Realtime Authorization) on the devserver's
Realtime service: real PostgreSQL, uvicorn on 127.0.0.1, raw websockets and the PyPI client."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import psycopg
import pytest
import websockets

from tablesync.devserver import realtime_protocol as proto

from .realtime_harness import Phoenix, RealtimeServer, token

pytestmark = pytest.mark.postgres

SETUP_SQL = """
CREATE POLICY room_read ON realtime.messages FOR SELECT TO authenticated
  USING (extension = 'broadcast'
         AND realtime.topic() = 'room:' || (auth.jwt() -> 'app_metadata' ->> 'system_id'));
CREATE TABLE public.notes (id bigint PRIMARY KEY, room text NOT NULL, body text);
CREATE FUNCTION public.notes_changes() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  PERFORM realtime.broadcast_changes('room:' || coalesce(NEW.room, OLD.room), TG_OP, TG_OP,
                                     TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
  RETURN NULL;
END $$;
CREATE TRIGGER notes_changes AFTER INSERT OR UPDATE OR DELETE ON public.notes
  FOR EACH ROW EXECUTE FUNCTION public.notes_changes();
"""


def sql(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode() if params is None else statement, params)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def server(pg_dsn: str) -> Iterator[RealtimeServer]:
    sql(pg_dsn, SETUP_SQL)
    srv = RealtimeServer(pg_dsn).start()
    yield srv
    srv.stop()


def _private_join(topic: str, tok: str) -> dict[str, Any]:
    return {"config": {"broadcast": {"ack": False, "self": False},
                       "presence": {"enabled": False, "key": ""},
                       "postgres_changes": [], "private": True}, "access_token": tok}


def _decode_binary(frame: bytes) -> tuple[str, str, dict[str, Any], Any]:
    """Realtime's V2 user-broadcast frame -> (topic, event, meta, payload)."""
    assert frame[0] == proto.USER_BROADCAST and frame[4] == 1, frame[:5]
    sizes, at = frame[1:4], 5
    parts = []
    for size in sizes:
        parts.append(frame[at:at + size].decode())
        at += size
    return parts[0], parts[1], json.loads(parts[2]), json.loads(frame[at:])


async def _join(ph: Phoenix, topic: str, tok: str) -> dict[str, Any]:
    ref = ph.next_ref()
    await ph.send(topic, "phx_join", _private_join(topic, tok), ref=ref, join_ref=ref)
    while True:
        raw = await asyncio.wait_for(ph.ws.recv(), 10)
        if isinstance(raw, str):
            msg = ph.normalize(raw)
            if msg["event"] == "phx_reply" and msg["ref"] == ref:
                return msg["payload"]


def test_private_broadcast_binary_frames_and_refused_join(server: RealtimeServer,
                                                           pg_dsn: str) -> None:
    """vsn 2.0.0: authorised private joins get broadcasts as binary user-broadcast frames;
    a join on another system's topic is refused; public and other-topic messages stay out."""
    tok_a = token(system_id="A")

    async def main() -> None:
        async with websockets.connect(server.ws_url(vsn="2.0.0")) as ws:
            ph = Phoenix(ws, "2.0.0")
            assert (await _join(ph, "realtime:room:A", tok_a))["status"] == "ok"
            refused = await _join(ph, "realtime:room:B", tok_a)
            assert refused == {"status": "error", "response": {"reason": (
                "Unauthorized: You do not have permissions to read from this Channel "
                "topic: room:B")}}
            sql(pg_dsn, "SELECT realtime.send('{\"n\": 1}', 'ev', 'room:B', true)")
            sql(pg_dsn, "SELECT realtime.send('{\"n\": 2}', 'ev', 'room:A', false)")
            # a rolled-back send is never delivered
            sql(pg_dsn, "BEGIN; SELECT realtime.send('{\"n\": 3}', 'ev', 'room:A'); ROLLBACK;")
            sql(pg_dsn, "SELECT realtime.send('{\"n\": 4}', 'ev', 'room:A')")
            raw = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(raw, bytes)
            topic, event, meta, payload = _decode_binary(raw)
            assert (topic, event, payload["n"]) == ("realtime:room:A", "ev", 4)
            assert meta["id"] == payload["id"]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)

    run(main())


def test_official_client_private_channel_broadcast_changes(server: RealtimeServer,
                                                            pg_dsn: str) -> None:
    """The PyPI client: channel(topic, {"config": {"private": True}}) + on_broadcast receives
    realtime.broadcast_changes() payloads; an unauthorised private join is refused."""
    from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

    async def main() -> None:
        client = AsyncRealtimeClient(server.http_url, server.anon_key, auto_reconnect=False)
        await client.set_auth(token(system_id="A"))
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        states: list[Any] = []
        subscribed = asyncio.Event()

        def on_state(state: Any, err: Any) -> None:
            states.append((state, err))
            subscribed.set()

        channel = client.channel("room:A", {"config": {"private": True}})
        channel.on_broadcast("INSERT", lambda p: got.put_nowait(p))
        await channel.subscribe(on_state)
        await asyncio.wait_for(subscribed.wait(), 5)
        assert states == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
        sql(pg_dsn, "INSERT INTO notes (id, room, body) VALUES (1, 'B', 'other room')")
        sql(pg_dsn, "INSERT INTO notes (id, room, body) VALUES (2, 'A', 'mine')")
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg["event"] == "INSERT" and msg["meta"]["id"] == msg["payload"]["id"]
        body = msg["payload"]
        assert body["operation"] == "INSERT" and body["table"] == "notes"
        assert body["schema"] == "public" and body["old_record"] is None
        assert body["record"] == {"id": 2, "room": "A", "body": "mine"}
        assert got.empty()

        other = client.channel("room:B", {"config": {"private": True}})
        other_states: list[Any] = []
        done = asyncio.Event()

        def on_other(state: Any, err: Any) -> None:
            other_states.append(state)
            done.set()

        await other.subscribe(on_other)
        await asyncio.wait_for(done.wait(), 5)
        assert other_states[0] == RealtimeSubscribeStates.CHANNEL_ERROR
        await client.remove_all_channels()
        await client.close()

    run(main())


def test_oversized_broadcast_is_dropped(pg_dsn: str) -> None:
    """A message over the payload limit is dropped before fan-out (hosted: logged only)."""
    sql(pg_dsn, SETUP_SQL)
    srv = RealtimeServer(pg_dsn, max_payload_bytes=1000).start()
    try:
        async def main() -> None:
            async with websockets.connect(srv.ws_url(vsn="1.0.0")) as ws:
                ph = Phoenix(ws, "1.0.0")
                assert (await _join(ph, "realtime:room:A", token(system_id="A")))["status"] \
                    == "ok"
                big = json.dumps({"body": "x" * 2000})
                sql(pg_dsn, "SELECT realtime.send(%s::jsonb, 'ev', 'room:A')", (big,))
                sql(pg_dsn, "SELECT realtime.send('{\"small\": true}', 'ev', 'room:A')")
                msg = await ph.recv_until(lambda m: m["event"] == "broadcast")
                assert msg["payload"]["payload"]["small"] is True
                assert msg["payload"]["type"] == "broadcast"
                assert srv.service.broadcasts.oversize == 1
        run(main())
    finally:
        srv.stop()


def test_devserver_passes_the_plan_payload_limit(pg_dsn: str) -> None:
    from tablesync.devserver.server import DevServer

    srv = DevServer(dsn=pg_dsn, realtime_max_payload_kb=3000)
    srv.start()
    try:
        service = srv._app.state.realtime()  # the running RealtimeService
        assert service.broadcasts.max_payload_bytes == 3000 * 1000 + 500
    finally:
        srv.stop()


def test_a_new_token_without_read_permission_closes_the_private_channel(
        server: RealtimeServer) -> None:
    """access_token re-runs the authorization: a token of another system loses the topic."""
    async def main() -> None:
        async with websockets.connect(server.ws_url(vsn="1.0.0")) as ws:
            ph = Phoenix(ws, "1.0.0")
            assert (await _join(ph, "realtime:room:A", token(system_id="A")))["status"] == "ok"
            await ph.send("realtime:room:A", "access_token",
                          {"access_token": token(system_id="B")}, join_ref="1")
            err = await ph.recv_until(lambda m: m["event"] == "system")
            assert err["payload"]["status"] == "error"
            assert err["payload"]["message"].startswith("You do not have permissions to read")
            await ph.recv_until(lambda m: m["event"] == "phx_close")
    run(main())
