"""Realtime through the whole devserver, driven by the official `supabase` client."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import httpx
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import ITEMS_SQL, create_user, run_sql

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def live(pg_dsn: str) -> Iterator[DevServerInfo]:
    run_sql(pg_dsn, ITEMS_SQL + "ALTER PUBLICATION supabase_realtime ADD TABLE public.items;")
    srv = DevServer(dsn=pg_dsn)  # auto_realtime: the devserver mounts RealtimeService
    info = srv.start()
    yield info
    srv.stop()


def test_supabase_client_signs_in_writes_over_rest_and_hears_its_rows(
        live: DevServerInfo) -> None:
    from supabase import acreate_client

    with httpx.Client(base_url=live.url) as http:
        create_user(http, live, "a@example.com", "A")
        create_user(http, live, "b@example.com", "B")

    async def user(email: str) -> Any:
        client = await acreate_client(live.url, live.anon_key)
        await client.auth.sign_in_with_password({"email": email, "password": "secret-pass-1"})
        return client

    async def main() -> None:
        a, b = await user("a@example.com"), await user("b@example.com")
        events: dict[str, asyncio.Queue[dict[str, Any]]] = {"A": asyncio.Queue(),
                                                            "B": asyncio.Queue()}
        ready = {"A": asyncio.Event(), "B": asyncio.Event()}
        for name, client in (("A", a), ("B", b)):
            channel = client.channel(f"sync-{name}")
            channel.on_postgres_changes("*", events[name].put_nowait, table="items",
                                        schema="public")
            channel.on_system(lambda p, n=name: ready[n].set()
                              if p.message == "Subscribed to PostgreSQL" else None)
            await channel.subscribe()
        await asyncio.wait_for(asyncio.gather(ready["A"].wait(), ready["B"].wait()), 10)
        await a.table("items").insert({"id": 1, "system_id": "A", "title": "a"}).execute()
        await b.table("items").insert({"id": 2, "system_id": "B", "title": "b"}).execute()
        await a.table("items").update({"title": "a!"}).eq("id", 1).execute()
        got_a = [await asyncio.wait_for(events["A"].get(), 5) for _ in range(2)]
        got_b = await asyncio.wait_for(events["B"].get(), 5)
        assert [(e["data"]["type"], e["data"]["record"]["title"]) for e in got_a] == [
            ("INSERT", "a"), ("UPDATE", "a!")]
        assert got_b["data"]["record"]["system_id"] == "B"
        await asyncio.sleep(0.3)
        assert events["A"].empty() and events["B"].empty()
        for client in (a, b):
            await client.realtime.remove_all_channels()

    asyncio.run(asyncio.wait_for(main(), 60))
