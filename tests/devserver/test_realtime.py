"""Realtime service end to end: real PostgreSQL, real uvicorn on 127.0.0.1, real websockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import psycopg
import pytest
import websockets

from tablesync.clock import ManualClock

from .realtime_harness import Phoenix, RealtimeServer, token

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


_open: list[Any] = []


def run(coro: Any) -> Any:
    """Run a test body (30 s cap), then close the websockets it opened."""
    async def body() -> Any:
        try:
            return await asyncio.wait_for(coro, 30)
        finally:
            while _open:
                await _open.pop().close()

    return asyncio.run(body())


async def connect(server: RealtimeServer, vsn: str = "1.0.0",
                  apikey: str | None = None) -> Phoenix:
    ws = await websockets.connect(server.ws_url(apikey, vsn))
    _open.append(ws)
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


def test_official_client_filtered_insert_update_delete(server: RealtimeServer, db: str) -> None:
    """The PyPI `realtime` client subscribes to a filtered table and gets I/U/D events."""
    from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

    sql(db, "ALTER TABLE items REPLICA IDENTITY FULL")  # so DELETE can match a non-PK filter

    async def main() -> None:
        client = AsyncRealtimeClient(server.http_url, server.anon_key, auto_reconnect=False)
        await client.set_auth(token(system_id="A"))
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        live = asyncio.Event()
        states: list[Any] = []
        channel = client.channel("sync-items")
        channel.on_postgres_changes("*", lambda p: got.put_nowait(p), table="items",
                                    schema="public", filter="system_id=eq.A")
        channel.on_system(lambda p: live.set()
                          if p.message == "Subscribed to PostgreSQL" else None)
        await channel.subscribe(lambda state, err: states.append((state, err)))
        await asyncio.wait_for(live.wait(), 5)
        assert states == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
        sql(db, "INSERT INTO items (id, system_id, title) VALUES (1, 'B', 'other system')")
        sql(db, "INSERT INTO items (id, system_id, title) VALUES (2, 'A', 'mine')")
        sql(db, "UPDATE items SET title = 'renamed' WHERE id = 2")
        sql(db, "DELETE FROM items WHERE id = 2")
        ins, upd, dele = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
        assert ins["data"]["type"] == "INSERT" and ins["data"]["record"]["title"] == "mine"
        assert upd["data"]["type"] == "UPDATE" and upd["data"]["record"]["title"] == "renamed"
        assert upd["data"]["old_record"]["title"] == "mine"  # replica identity full
        assert dele["data"]["type"] == "DELETE"
        assert dele["data"]["old_record"] == {"id": 2}  # RLS table: primary key only
        assert "record" not in dele["data"]
        assert got.empty()
        await client.remove_all_channels()

    run(main())


def test_delete_not_matched_by_non_identity_filter(server: RealtimeServer, db: str) -> None:
    """Default replica identity: a filtered subscriber misses DELETE (as on Supabase)."""

    async def main() -> None:
        ph = await connect(server)
        await ph.join_live("realtime:f", CHANGES_A, token(system_id="A"))
        ph2 = await connect(server)
        await ph2.join_live("realtime:u", [{"event": "DELETE", "schema": "public",
                                            "table": "items"}], token(system_id="A"))
        sql(db, "INSERT INTO items (id, system_id) VALUES (7, 'A')")
        sql(db, "DELETE FROM items WHERE id = 7")
        sql(db, "INSERT INTO items (id, system_id) VALUES (8, 'A')")
        first = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        second = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert [first["payload"]["data"]["type"], second["payload"]["data"]["type"]] == [
            "INSERT", "INSERT"]
        unfiltered = await ph2.recv_until(lambda m: m["event"] == "postgres_changes")
        assert unfiltered["payload"]["data"]["type"] == "DELETE"
        assert unfiltered["payload"]["data"]["old_record"] == {"id": 7}

    run(main())


def test_rls_isolates_systems_without_filter(server: RealtimeServer, db: str) -> None:
    async def main() -> None:
        a, b = await connect(server), await connect(server)
        unfiltered = [{"event": "*", "schema": "public", "table": "items"}]
        await a.join_live("realtime:all", unfiltered, token(system_id="A"))
        await b.join_live("realtime:all", unfiltered, token(system_id="B"))
        anon = await connect(server)
        await anon.join_live("realtime:all", unfiltered, None)  # socket apikey: anon role
        sql(db, "INSERT INTO items (id, system_id, title) VALUES (1, 'A', 'a1'), "
                "(2, 'B', 'b1'), (3, 'A', 'a2')")
        sql(db, "UPDATE items SET title = title || '!'")
        seen: dict[str, list[tuple[str, Any]]] = {"A": [], "B": []}
        for name, ph, count in (("A", a, 4), ("B", b, 2)):
            for _ in range(count):
                m = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
                data = m["payload"]["data"]
                seen[name].append((data["type"], data["record"]["system_id"]))
        assert seen["A"] == [("INSERT", "A"), ("INSERT", "A"), ("UPDATE", "A"), ("UPDATE", "A")]
        assert seen["B"] == [("INSERT", "B"), ("UPDATE", "B")]
        sql(db, "INSERT INTO items (id, system_id) VALUES (9, 'B')")
        m = await b.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"]["id"] == 9  # nothing else queued for B
        with pytest.raises(TimeoutError):
            await a.recv_until(lambda m: m["event"] == "postgres_changes", timeout=0.5)
        with pytest.raises(TimeoutError):  # anon has no policy: sees nothing
            await anon.recv_until(lambda m: m["event"] == "postgres_changes", timeout=0.3)

    run(main())


@pytest.mark.parametrize("flt, expected", [
    ("n=eq.3", [3]), ("n=neq.3", [1, 2, 4, 5]), ("n=lt.3", [1, 2]), ("n=lte.3", [1, 2, 3]),
    ("n=gt.3", [4, 5]), ("n=gte.3", [3, 4, 5]), ("n=in.(1,4,5)", [1, 4, 5]),
    ("title=eq.t2", [2]), ("n=gt.1,n=lt.4", [2, 3]), ("n=not.in.(1,2)", [3, 4, 5]),
])
def test_filter_operators(server: RealtimeServer, db: str, flt: str,
                          expected: list[int]) -> None:
    async def main() -> None:
        ph = await connect(server, "2.0.0")
        await ph.join_live("realtime:ops", [{"event": "INSERT", "schema": "public",
                                             "table": "items", "filter": flt}],
                           token(system_id="A"))
        await ph.join_live("realtime:sentinel", [{"event": "INSERT", "table": "items"}],
                           token(system_id="A"))
        for n in range(1, 6):
            sql(db, "INSERT INTO items (id, system_id, n, title) VALUES (%s, 'A', %s, %s)",
                (n, n, f"t{n}"))
        sql(db, "INSERT INTO items (id, system_id, n) VALUES (99, 'A', NULL)")
        sql(db, "INSERT INTO items (id, system_id, n) VALUES (100, 'A', 3)")
        got: list[int] = []
        while True:  # one socket delivers in commit order: stop at the sentinel's row 100
            m = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            record = m["payload"]["data"]["record"]
            if m["topic"] == "realtime:sentinel":
                if record["id"] == 100:
                    break
                continue
            if record["id"] != 100:
                got.append(record["n"])
        assert got == expected

    run(main())


def test_several_bindings_share_one_event(server: RealtimeServer, db: str) -> None:
    async def main() -> None:
        ph = await connect(server)
        changes = [{"event": "INSERT", "schema": "public", "table": "items", "filter": "n=gt.1"},
                   {"event": "*", "schema": "public", "table": "items", "filter": "n=lt.10"},
                   {"event": "UPDATE", "schema": "public", "table": "items"}]
        _, reply = await ph.join("realtime:multi", changes, token(system_id="A"))
        ids = [e["id"] for e in reply["payload"]["response"]["postgres_changes"]]
        assert len(set(ids)) == 3
        await ph.recv_until(lambda m: m["event"] == "system")
        sql(db, "INSERT INTO items (id, system_id, n) VALUES (1, 'A', 5)")
        sql(db, "UPDATE items SET n = 50")
        ins = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        upd = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert sorted(ins["payload"]["ids"]) == sorted(ids[:2])
        assert upd["payload"]["ids"] == [ids[2]]

    run(main())


def test_large_payload_over_notify_limit(server: RealtimeServer, db: str) -> None:
    big = "x" * 20000 + "é" * 1000

    async def main() -> None:
        ph = await connect(server)
        await ph.join_live("realtime:big", CHANGES_A, token(system_id="A"))
        sql(db, "INSERT INTO items (id, system_id, body) VALUES (1, 'A', %s)", (big,))
        sql(db, "UPDATE items SET title = 'after' WHERE id = 1")
        ins = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        upd = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert ins["payload"]["data"]["record"]["body"] == big
        assert upd["payload"]["data"]["record"]["body"] == big
        assert upd["payload"]["data"]["record"]["title"] == "after"
        assert upd["payload"]["data"]["old_record"] == {"id": 1}

    run(main())


def test_join_errors(server: RealtimeServer) -> None:
    async def main() -> None:
        ph = await connect(server)
        cases = [
            (token(system_id="A", exp_in=-300),
             "InvalidJWTToken: Token has expired 300 seconds ago"),
            (token(system_id="A", secret="another-secret"),
             "JwtSignatureError: Failed to validate JWT signature"),
            ("not-a-jwt", "MalformedJWT: The token provided is not a valid JWT"),
            (token(role=None), "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        ]
        for bad, reason in cases:
            _, reply = await ph.join("realtime:x", CHANGES_A, bad)
            got = reply["payload"]["response"]["reason"]
            if "300 seconds" in reason and "301 seconds" in got:  # a second boundary passed
                got = got.replace("301", "300")
            assert reply["payload"] == {"status": "error", "response": {"reason": got}}
            assert got == reason
        unsigned = token(system_id="A").rsplit(".", 1)[0] + "."
        _, reply = await ph.join("realtime:x", CHANGES_A, unsigned)
        assert reply["payload"]["response"]["reason"] == (
            "JwtSignatureError: Failed to validate JWT signature")
        _, reply = await ph.join("realtime:", CHANGES_A, token(system_id="A"))
        assert reply["payload"]["response"]["reason"] == (
            "TopicNameRequired: You must provide a topic name")
        _, reply = await ph.join("room:1", CHANGES_A, token(system_id="A"))
        assert reply["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}
        ref = await ph.send("realtime:never-joined", "access_token", {"access_token": "x"})
        m = await ph.recv()
        assert m["ref"] == ref and m["payload"]["response"] == {"reason": "unmatched topic"}

    run(main())


def test_handshake_refuses_bad_apikey(server: RealtimeServer) -> None:
    async def refused(url: str) -> tuple[int, Any]:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await websockets.connect(url)
        response = info.value.response
        return response.status_code, json.loads(response.body)

    async def main() -> None:
        base = f"ws://127.0.0.1:{server.port}/realtime/v1/websocket"
        assert await refused(base + "?vsn=1.0.0") == (401, {"error": "API key is missing"})
        assert await refused(server.ws_url(token(exp_in=-5))) == (
            401, {"error": "Token has expired"})
        assert await refused(server.ws_url(token(secret="nope"))) == (
            401, {"error": "Failed to validate JWT signature"})
        assert await refused(server.ws_url("garbage")) == (
            401, {"error": "The token provided is not a valid JWT"})

    run(main())


def test_subscription_errors_keep_channel_open(server: RealtimeServer, db: str) -> None:
    sql(db, "CREATE TABLE public.unpublished (id int PRIMARY KEY)")

    async def main() -> None:
        ph = await connect(server)
        cases = [
            ({"event": "*", "schema": "public", "table": "items", "filter": "nope=eq.1"},
             "Unable to subscribe to changes with given parameters. An exception happened so "
             "please check your connect parameters: [event: *, schema: public, table: items, "
             "filters: [{\"nope\", \"eq\", \"1\", false}], select: nil]. Exception: ERROR P0001 "
             "(raise_exception) invalid column for filter nope"),
            ({"event": "*", "schema": "public", "table": "unpublished"},
             "Unable to subscribe to changes with given parameters. Please check Realtime is "
             "enabled for the given connect parameters: [event: *, schema: public, table: "
             "unpublished, filters: [], select: nil]"),
            ({"event": "*", "schema": "public", "table": "items", "filter": "n=foo.1"},
             'Error parsing `filter` params: ["foo", "1"]'),
            ({"event": "*", "schema": "public", "table": "items", "filter": "n=in.1,2"},
             "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"),
        ]
        for i, (params, message) in enumerate(cases):
            _, reply = await ph.join(f"realtime:e{i}", [params], token(system_id="A"))
            assert reply["payload"]["status"] == "ok"
            m = await ph.recv_until(lambda m: m["event"] == "system")
            assert m["payload"] == {"extension": "postgres_changes", "status": "error",
                                    "message": message, "channel": f"e{i}"}
        values = ",".join(str(i) for i in range(101))
        await ph.join("realtime:many", [{"event": "*", "schema": "public", "table": "items",
                                          "filter": f"n=in.({values})"}], token(system_id="A"))
        m = await ph.recv_until(lambda m: m["event"] == "system")
        assert m["payload"]["message"].endswith("too many values for `in` filter. Maximum 100")
        ref = await ph.send("phoenix", "heartbeat", {})
        assert (await ph.recv())["ref"] == ref  # socket still fine

    run(main())


def test_table_added_to_publication_after_start(server: RealtimeServer, db: str) -> None:
    sql(db, "CREATE TABLE public.late (id int PRIMARY KEY, v text);"
            "ALTER PUBLICATION supabase_realtime ADD TABLE public.late")

    async def main() -> None:
        ph = await connect(server)
        await ph.join_live("realtime:late", [{"event": "*", "table": "late"}],
                           token(system_id="A"))
        sql(db, "INSERT INTO late VALUES (1, 'v')")
        m = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"] == {"id": 1, "v": "v"}
        assert m["payload"]["data"]["table"] == "late"

    run(main())


def test_leave_replies_then_closes(server: RealtimeServer, db: str) -> None:
    async def main() -> None:
        ph = await connect(server, "2.0.0")
        join_ref, _ = await ph.join_live("realtime:l", CHANGES_A, token(system_id="A"))
        ref = await ph.send("realtime:l", "phx_leave", {}, join_ref=join_ref)
        reply = await ph.recv()
        assert reply["raw"] == [join_ref, ref, "realtime:l", "phx_reply",
                                {"status": "ok", "response": {}}]
        close = await ph.recv()
        assert close["raw"] == [join_ref, join_ref, "realtime:l", "phx_close", {}]
        sql(db, "INSERT INTO items (id, system_id) VALUES (1, 'A')")
        with pytest.raises(TimeoutError):
            await ph.recv(timeout=0.4)

    run(main())


def test_channel_tokens_expire_on_the_injected_clock(db: str) -> None:
    clock = ManualClock()
    srv = RealtimeServer(db, clock=clock).start()

    async def main() -> None:
        ph = await connect(srv)
        t0 = clock()
        await ph.join_live("realtime:m", CHANGES_A, token(system_id="A", exp_in=1, now=t0))
        with pytest.raises(TimeoutError):       # past exp in real time; the clock stood still
            await ph.recv(timeout=1.5)
        clock.advance(2)
        system = await ph.recv_until(lambda m: m["event"] == "system", timeout=5)
        assert system["payload"]["message"] == "Token has expired 1 seconds ago"
        assert (await ph.recv())["event"] == "phx_close"
        clock.advance(3600)                     # valid by the machine's time, not the clock's
        _, reply = await ph.join("realtime:n", CHANGES_A, token(system_id="A", exp_in=60,
                                                                now=t0))
        assert reply["payload"]["status"] == "error"
        assert reply["payload"]["response"]["reason"].startswith(
            "InvalidJWTToken: Token has expired")

    try:
        run(main())
    finally:
        srv.stop()


def test_token_renewal_keeps_channel_and_expiry_closes_it(server: RealtimeServer,
                                                          db: str) -> None:
    async def main() -> None:
        renewed, lapsed = await connect(server), await connect(server, "2.0.0")
        r_ref, _ = await renewed.join_live("realtime:r", CHANGES_A,
                                           token(system_id="A", exp_in=3))
        l_ref, _ = await lapsed.join_live("realtime:l", CHANGES_A,
                                          token(system_id="A", exp_in=3))
        await renewed.send("realtime:r", "access_token",
                           {"access_token": token(system_id="A", exp_in=60)}, join_ref=r_ref)
        again = await renewed.recv_until(lambda m: m["event"] == "system")
        assert again["payload"]["message"] == "Subscribed to PostgreSQL"
        system = await lapsed.recv_until(lambda m: m["event"] == "system", timeout=8)
        assert system["raw"][:4] == [l_ref, None, "realtime:l", "system"]
        assert system["payload"]["extension"] == "system"
        assert system["payload"]["status"] == "error"
        assert system["payload"]["message"].startswith("Token has expired")
        close = await lapsed.recv()
        assert close["raw"] == [l_ref, l_ref, "realtime:l", "phx_close", {}]
        sql(db, "INSERT INTO items (id, system_id) VALUES (1, 'A')")
        m = await renewed.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"]["id"] == 1
        with pytest.raises(TimeoutError):
            await lapsed.recv(timeout=0.3)
        # a renewal with an expired token closes the channel at once
        await renewed.send("realtime:r", "access_token",
                           {"access_token": token(system_id="A", exp_in=-10)}, join_ref=r_ref)
        system = await renewed.recv_until(lambda m: m["event"] == "system")
        assert system["payload"]["message"] in ("Token has expired 10 seconds ago",
                                                "Token has expired 11 seconds ago")
        assert (await renewed.recv())["event"] == "phx_close"
        # a wrongly signed renewal: Realtime reports the inspected atom, then closes
        ref, _ = await renewed.join_live("realtime:r2", CHANGES_A, token(system_id="A"))
        await renewed.send("realtime:r2", "access_token",
                           {"access_token": token(system_id="A", secret="wrong")}, join_ref=ref)
        system = await renewed.recv_until(lambda m: m["event"] == "system")
        assert system["payload"] == {"extension": "system", "status": "error",
                                     "message": ":signature_error", "channel": "r2"}
        assert (await renewed.recv())["event"] == "phx_close"

    run(main())


def test_renewed_claims_change_what_rls_lets_through(server: RealtimeServer, db: str) -> None:
    async def main() -> None:
        ph = await connect(server)
        ref, _ = await ph.join_live("realtime:s", [{"event": "INSERT", "table": "items"}],
                                    token(system_id="A"))
        await ph.send("realtime:s", "access_token", {"access_token": token(system_id="B")},
                      join_ref=ref)
        await ph.recv_until(lambda m: m["event"] == "system")
        sql(db, "INSERT INTO items (id, system_id) VALUES (1, 'A'), (2, 'B')")
        m = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"]["id"] == 2
        with pytest.raises(TimeoutError):
            await ph.recv(timeout=0.3)

    run(main())


def test_duplicate_join_closes_the_old_one(server: RealtimeServer) -> None:
    async def main() -> None:
        ph = await connect(server)
        first, _ = await ph.join_live("realtime:d", CHANGES_A, token(system_id="A"))
        ref = ph.next_ref()
        await ph.send("realtime:d", "phx_join", {"config": {"postgres_changes": []},
                                                 "access_token": token(system_id="A")},
                      ref=ref, join_ref=ref)
        close = await ph.recv()
        assert close["event"] == "phx_close" and close["ref"] == first
        reply = await ph.recv()
        assert reply["ref"] == ref and reply["payload"] == {
            "status": "ok", "response": {"postgres_changes": []}}

    run(main())


def test_stop_closes_sockets_and_leaves_no_tasks(db: str) -> None:
    from .realtime_harness import SECRET

    from tablesync.devserver.realtime import RealtimeService

    async def main() -> None:
        before = asyncio.all_tasks()
        service = RealtimeService(dsn=db, jwt_secret=SECRET, anon_key="", service_key="")
        await service.start()
        await service.stop()
        await service.start()  # restartable
        await service.stop()
        assert asyncio.all_tasks() - before == set()

    run(main())


def test_idle_socket_is_closed_and_stop_closes_live_sockets(db: str) -> None:
    srv = RealtimeServer(db, idle_timeout=0.5).start()
    try:
        async def idle() -> None:
            ph = await connect(srv)
            await ph.join_live("realtime:i", CHANGES_A, token(system_id="A"))
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:  # nothing sent by the client: the server hangs up after 0.5 s
                    await ph.recv(timeout=3)

        run(idle())

        async def on_stop() -> None:
            ph = await connect(srv)
            await ph.join_live("realtime:s", CHANGES_A, token(system_id="A"))
            assert srv.loop is not None
            stopped = asyncio.run_coroutine_threadsafe(srv.service.stop(), srv.loop)
            await asyncio.get_running_loop().run_in_executor(None, stopped.result, 10)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await ph.recv(timeout=3)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001

        run(on_stop())
    finally:
        srv.stop()


def test_malformed_frames_are_dropped_and_the_socket_stays(server: RealtimeServer) -> None:
    async def main() -> None:
        ph = await connect(server, "2.0.0")
        for junk in ("not json", '{"topic":"phoenix"}', "[1,2,3]", '[null,"1",5,"x",{}]'):
            await ph.ws.send(junk)
        await ph.ws.send(b"\x00\x01binary")
        await ph.send("realtime:j", "phx_join", {"config": 7}, join_ref="9")
        reply = await ph.recv()
        assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
        ref = await ph.send("phoenix", "heartbeat", {})
        assert (await ph.recv())["ref"] == ref

    run(main())


def test_legacy_topic_api_and_column_privileges(server: RealtimeServer, db: str) -> None:
    sql(db, "REVOKE SELECT ON items FROM authenticated;"
            "GRANT SELECT (id, system_id, title) ON items TO authenticated")

    async def main() -> None:
        ph = await connect(server)
        ref = ph.next_ref()
        await ph.send("realtime:public:items", "phx_join",
                      {"user_token": token(system_id="A")}, ref=ref, join_ref=ref)
        reply = await ph.recv()
        entry = reply["payload"]["response"]["postgres_changes"][0]
        assert {k: v for k, v in entry.items() if k != "id"} == {"schema": "public",
                                                                 "table": "items"}
        await ph.recv_until(lambda m: m["event"] == "system")
        sql(db, "INSERT INTO items (id, system_id, title, n, body) VALUES (1, 'A', 't', 2, 'b')")
        m = await ph.recv_until(lambda m: m["event"] == "INSERT")  # legacy: event = type
        assert m["payload"]["record"] == {"id": 1, "system_id": "A", "title": "t"}
        assert [c["name"] for c in m["payload"]["columns"]] == ["id", "system_id", "title"]

    run(main())


def test_survives_foreign_notifications_and_lost_connections(server: RealtimeServer,
                                                              db: str) -> None:
    async def main() -> None:
        ph = await connect(server)
        await ph.join_live("realtime:k", CHANGES_A, token(system_id="A"))
        sql(db, "NOTIFY tablesync_realtime, 'junk'; NOTIFY tablesync_realtime, '{\"x\": 1}'")
        sql(db, "INSERT INTO items (id, system_id) VALUES (1, 'A')")
        m = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"]["id"] == 1
        sql(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for attempt in range(2, 40):  # the service reconnects with a short backoff
            sql(db, "INSERT INTO items (id, system_id) VALUES (%s, 'A')", (attempt,))
            try:
                m = await ph.recv_until(lambda m: m["event"] == "postgres_changes", timeout=0.5)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no event after the service's connections were terminated")
        for _ in range(20):  # joins work again once the control connection is back
            _, reply = await ph.join("realtime:k2", CHANGES_A, token(system_id="A"))
            system = await ph.recv_until(lambda m: m["event"] == "system")
            if system["payload"]["status"] == "ok":
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("joins keep failing after reconnect")

    run(main())


def test_client_that_cannot_keep_up_is_disconnected(db: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst larger than the socket's outbox closes that socket; others are unaffected."""
    from tablesync.devserver import realtime_session

    sql(db, "CREATE TABLE public.open_items (id int PRIMARY KEY);"
            "ALTER PUBLICATION supabase_realtime ADD TABLE public.open_items")
    monkeypatch.setattr(realtime_session, "OUTBOX_LIMIT", 3)
    srv = RealtimeServer(db).start()
    try:
        async def main() -> None:
            ph = await connect(srv)
            await ph.join_live("realtime:burst", [{"event": "INSERT", "table": "open_items"}],
                               token(system_id="A"))
            sql(db, "INSERT INTO open_items SELECT generate_series(1, 200)")
            got = 0
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:
                    await ph.recv(timeout=10)
                    got += 1
            assert got < 200
            calm = await connect(srv)  # the service itself is fine
            await calm.join_live("realtime:calm", [{"event": "INSERT", "table": "open_items"}],
                                 token(system_id="A"))
            sql(db, "INSERT INTO open_items VALUES (1000)")
            m = await calm.recv_until(lambda m: m["event"] == "postgres_changes")
            assert m["payload"]["data"]["record"] == {"id": 1000}

        run(main())
    finally:
        srv.stop()


def test_policy_error_for_one_subscriber_does_not_starve_others(server: RealtimeServer,
                                                                db: str) -> None:
    owner = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    sql(db, "CREATE TABLE public.notes (id int PRIMARY KEY, owner uuid NOT NULL);"
            "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;"
            "CREATE POLICY mine ON notes FOR SELECT TO authenticated"
            "  USING (owner = (auth.jwt() ->> 'sub')::uuid);"
            "ALTER PUBLICATION supabase_realtime ADD TABLE public.notes")

    async def main() -> None:
        good, bad = await connect(server), await connect(server)
        changes = [{"event": "*", "table": "notes"}]
        await good.join_live("realtime:n", changes, token(sub=owner))
        await bad.join_live("realtime:n", changes, token(sub="not-a-uuid"))  # policy raises
        sql(db, f"INSERT INTO notes VALUES (1, '{owner}')")
        m = await good.recv_until(lambda m: m["event"] == "postgres_changes")
        assert m["payload"]["data"]["record"]["id"] == 1
        with pytest.raises(TimeoutError):
            await bad.recv(timeout=0.5)

    run(main())


def test_start_on_a_missing_database_says_so(pg_server: Any) -> None:
    from tablesync.devserver.realtime import RealtimeService
    from tablesync.devserver.errors import DevServerError

    async def main() -> None:
        before = asyncio.all_tasks()
        service = RealtimeService(dsn=pg_server.dsn("no_such_database"), jwt_secret="s",
                                  anon_key="", service_key="")
        with pytest.raises(DevServerError, match="realtime could not prepare change capture"):
            await service.start()
        assert asyncio.all_tasks() - before == set()

    run(main())


def test_only_subscribed_tables_are_captured(db: str) -> None:
    """No subscriber, no capture work for the writer; a join turns it on before the
    "Subscribed to PostgreSQL" system message;
    the refresh after the last channel leaves turns it off again."""
    srv = RealtimeServer(db, refresh_interval=0.2).start()

    def captured() -> list[Any]:
        with psycopg.connect(db, autocommit=True) as conn:
            return conn.execute("SELECT relid::regclass::text FROM "
                                "realtime.tablesync_subscribed").fetchall()

    def changes_seq() -> int:
        with psycopg.connect(db, autocommit=True) as conn:
            return conn.execute("SELECT last_value FROM realtime.tablesync_change_id"
                                ).fetchone()[0]

    async def main() -> None:
        sql(db, "INSERT INTO items (id, system_id) VALUES (1, 'A')")
        before = changes_seq()
        sql(db, "INSERT INTO items (id, system_id) VALUES (2, 'A')")
        assert captured() == [] and changes_seq() == before     # nothing built or sent
        ph = await connect(srv)
        await ph.join("realtime:x", CHANGES_A, token(system_id="A"))
        await ph.recv()           # "Subscribed to PostgreSQL": capture is on from here
        assert captured() == [("items",)]
        sql(db, "INSERT INTO items (id, system_id) VALUES (3, 'A')")
        event = await ph.recv()
        assert event["payload"]["data"]["record"]["id"] == 3
        await ph.ws.close()
        for _ in range(100):                                      # bounded: 10 s
            if not captured():
                break
            await asyncio.sleep(0.1)
        assert captured() == []

    try:
        run(main())
    finally:
        srv.stop()
