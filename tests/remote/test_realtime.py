"""RealtimeClient against a real loopback Phoenix websocket server (tests/remote/phoenix_fake)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable

import pytest

from tablesync.backoff import Backoff
from tablesync.remote.base import ChangeEvent, TableChannel
from tablesync.remote.realtime import RealtimeClient, websocket_url
from tablesync.vault import Secret

from helpers import async_wait_for

from .phoenix_fake import FakePhoenix

TASKS = TableChannel("tasks", "system_id", "system-a")
PROJECTS = TableChannel("projects", "system_id", "system-a")


class Harness:
    def __init__(self, server: FakePhoenix, vsn: str = "2.0.0", **kw: Any) -> None:
        self.changes: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self.status: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        kw.setdefault("backoff", Backoff(base=0.05, cap=0.2, jitter=0.0))
        kw.setdefault("rejoin_delays", (0.05, 0.1))
        self.client = RealtimeClient(
            server.url, "anon-key", kw.pop("channels", [TASKS]),
            on_change=self.changes.put, on_status=lambda t, live: self.status.put_nowait((t, live)),
            access_token=Secret("jwt-1"), vsn=vsn, **kw)
        self.task = asyncio.ensure_future(self.client.run())

    async def next_status(self, timeout: float = 5.0) -> tuple[str, bool]:
        return await asyncio.wait_for(self.status.get(), timeout)

    async def next_change(self, timeout: float = 5.0) -> ChangeEvent:
        return await asyncio.wait_for(self.changes.get(), timeout)

    async def close(self) -> None:
        self.client.stop()
        await asyncio.wait_for(self.task, 5)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30))


def test_websocket_url() -> None:
    assert websocket_url("https://x.supabase.co/", "k", "2.0.0") == \
        "wss://x.supabase.co/realtime/v1/websocket?apikey=k&vsn=2.0.0"
    assert websocket_url("http://127.0.0.1:5", "a b").startswith(
        "ws://127.0.0.1:5/realtime/v1/websocket?apikey=a+b&vsn=2.0.0")


def test_bad_vsn_refused() -> None:
    with pytest.raises(ValueError):
        RealtimeClient("http://x", "k", [], on_change=print, vsn="3.0.0")


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
def test_join_waits_for_subscribed_then_delivers(vsn: str) -> None:
    async def body() -> None:
        async with FakePhoenix(auto_subscribe=False) as server:
            h = Harness(server, vsn=vsn)
            conn, (join_ref, ref, topic, event, payload) = await server.next("phx_join")
            assert conn.query == {"apikey": "anon-key", "vsn": vsn}
            assert topic == "realtime:tasks" and ref == join_ref
            assert payload["access_token"] == "jwt-1"
            assert payload["config"]["postgres_changes"] == [
                {"event": "*", "schema": "public", "table": "tasks",
                 "filter": "system_id=eq.system-a"}]
            # the join reply is processed, but without "subscribed" the channel is not live
            await async_wait_for(lambda: h.client.channels["realtime:tasks"].joined,
                                 what="the join reply processed")
            assert h.status.empty() and h.client.live_tables == frozenset()
            await conn.subscribed("realtime:tasks")
            assert await h.next_status() == ("tasks", True)
            assert h.client.live_tables == {"tasks"}
            await conn.change("realtime:tasks", "INSERT", {"id": "t1", "title": "a"})
            await conn.change("realtime:tasks", "UPDATE", {"id": "t1", "title": "b"})
            await conn.change("realtime:tasks", "DELETE", {"id": "t1"})
            got = [await h.next_change() for _ in range(3)]
            assert [(c.table, c.type) for c in got] == [("tasks", "INSERT"), ("tasks", "UPDATE"),
                                                        ("tasks", "DELETE")]
            assert got[0].record == {"id": "t1", "title": "a"} and got[0].old_record == {}
            assert got[2].record == {} and got[2].old_record == {"id": "t1"}
            assert got[0].commit_timestamp == "2026-11-24T12:00:00.000Z"
            await h.close()
            # a clean stop leaves the channel
            assert any(m[3] == "phx_leave" for m in conn.received)
    run(body)


def test_several_tables_each_live() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server, channels=[PROJECTS, TASKS])
            got = {await h.next_status(), await h.next_status()}
            assert got == {("projects", True), ("tasks", True)}
            await h.close()
    run(body)


def test_heartbeat_and_token_push() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server, heartbeat=0.1)
            assert await h.next_status() == ("tasks", True)
            conn, msg = await server.next("heartbeat")
            assert msg[:3] == (None, msg[1], "phoenix") and msg[4] == {}
            await server.next("heartbeat")
            h.client.set_token(Secret("jwt-2"))
            conn, (join_ref, _, topic, _, payload) = await server.next("access_token")
            assert topic == "realtime:tasks" and join_ref == conn.joins[topic]
            assert payload == {"access_token": "jwt-2"}
            assert h.client.stats.connects == 1
            await h.close()
    run(body)


def test_heartbeat_timeout_reconnects_and_rejoins_with_new_token() -> None:
    async def body() -> None:
        async with FakePhoenix(mute_heartbeat=True) as server:
            h = Harness(server, heartbeat=0.1)
            assert await h.next_status() == ("tasks", True)
            h.client.set_token(Secret("jwt-2"))
            assert await h.next_status() == ("", False)
            assert await h.next_status() == ("tasks", True)
            assert len(server.conns) >= 2
            joins = [m for m in server.conns[-1].received if m[3] == "phx_join"]
            assert joins[0][4]["access_token"] == "jwt-2"
            assert any("heartbeat timeout" in e for e in h.client.stats.errors)
            await h.close()
    run(body)


def test_server_drop_reconnects_and_reports() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server)
            assert await h.next_status() == ("tasks", True)
            await server.conns[0].ws.close(1001, "going away")
            assert await h.next_status() == ("", False)
            assert await h.next_status() == ("tasks", True)
            await server.conns[1].change("realtime:tasks", "INSERT", {"id": "t2"})
            assert (await h.next_change()).record == {"id": "t2"}
            await h.close()
    run(body)


def test_channel_close_and_system_error_rejoin() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server)
            assert await h.next_status() == ("tasks", True)
            conn = server.conns[0]
            ref = conn.joins["realtime:tasks"]
            await conn.push(ref, None, "realtime:tasks", "system",
                            {"extension": "system", "status": "error",
                             "message": "Token has expired 3 seconds ago", "channel": "tasks"})
            await conn.push(ref, ref, "realtime:tasks", "phx_close", {})
            assert await h.next_status() == ("tasks", False)
            assert await h.next_status() == ("tasks", True)
            assert conn.joins["realtime:tasks"] != ref
            # a postgres_changes error also leads to a rejoin
            ref2 = conn.joins["realtime:tasks"]
            await conn.push(ref2, None, "realtime:tasks", "system",
                            {"extension": "postgres_changes", "status": "error",
                             "message": "Unable to subscribe to changes", "channel": "tasks"})
            assert await h.next_status() == ("tasks", False)
            assert await h.next_status() == ("tasks", True)
            assert any("Token has expired" in e for e in h.client.stats.errors)
            await h.close()
    run(body)


def test_join_error_retries() -> None:
    async def body() -> None:
        async with FakePhoenix(join_error="InvalidJWTToken: Token has expired 1 seconds ago") \
                as server:
            h = Harness(server)
            await server.next("phx_join")
            await server.next("phx_join")
            server.join_error = None
            assert await h.next_status() == ("tasks", True)
            assert any("join refused" in e for e in h.client.stats.errors)
            await h.close()
    run(body)


def test_join_timeout_rejoins() -> None:
    async def body() -> None:
        async with FakePhoenix(auto_subscribe=False) as server:
            h = Harness(server, join_timeout=0.2)
            await server.next("phx_join")
            await server.next("phx_leave")
            conn, _ = await server.next("phx_join")
            await conn.subscribed("realtime:tasks")
            assert await h.next_status() == ("tasks", True)
            await h.close()
    run(body)


def test_malformed_frames_are_dropped() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server)
            assert await h.next_status() == ("tasks", True)
            conn = server.conns[0]
            for junk in ["not json", "[1,2]", "42", '{"topic": 5}', '[null,null,"realtime:tasks",'
                         '"postgres_changes",{"data":{"type":"UPSERT","table":"tasks"}}]',
                         '[null,null,"realtime:tasks","postgres_changes",{"data":{"type":'
                         '"INSERT","table":"other","record":{}}}]',
                         '[null,null,"realtime:tasks","postgres_changes",{"data":{"type":'
                         '"INSERT","table":"tasks","record":[1]}}]',
                         '[null,null,"realtime:tasks","postgres_changes",[]]',
                         '[null,null,"realtime:tasks","system","oops"]',
                         '[null,null,"realtime:nope","postgres_changes",{}]']:
                await conn.raw(junk)
            await conn.ws.send(b"\x00binary")
            await conn.change("realtime:tasks", "INSERT", {"id": "ok"})
            assert (await h.next_change()).record == {"id": "ok"}
            assert h.client.stats.malformed >= 7
            assert h.client.stats.connects == 1
            await h.close()
    run(body)


def test_handshake_refused_then_accepted() -> None:
    async def body() -> None:
        async with FakePhoenix(refuse_status=401) as server:
            h = Harness(server)
            await async_wait_for(lambda: any("HTTP 401" in e for e in h.client.stats.errors),
                                 what="the refused handshake reported")
            server.refuse_status = None
            assert await h.next_status() == ("tasks", True)
            await h.close()
    run(body)


def test_stop_from_another_thread() -> None:
    async def body() -> None:
        async with FakePhoenix() as server:
            h = Harness(server)
            assert await h.next_status() == ("tasks", True)
            t0 = time.monotonic()
            threading.Thread(target=h.client.stop).start()
            await asyncio.wait_for(h.task, 5)
            assert time.monotonic() - t0 < 3
    run(body)


def test_stop_while_server_unreachable() -> None:
    async def body() -> None:
        client = RealtimeClient("http://127.0.0.1:9", "k", [TASKS], on_change=print,
                                backoff=Backoff(base=5, cap=5, jitter=0))
        task = asyncio.ensure_future(client.run())
        await async_wait_for(lambda: client.stats.errors, what="a failed connect")
        client.stop()
        await asyncio.wait_for(task, 3)
        assert client.stats.connects == 0 and client.stats.errors
    run(body)
