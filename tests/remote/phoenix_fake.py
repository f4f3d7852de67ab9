"""A scripted Phoenix/Realtime websocket server on 127.0.0.1 (websockets.serve), for tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


@dataclass
class Conn:
    ws: ServerConnection
    vsn: str
    query: dict[str, str]
    received: list[tuple[Any, ...]] = field(default_factory=list)
    joins: dict[str, str] = field(default_factory=dict)   # topic -> join_ref

    async def push(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(json.dumps({"topic": topic, "event": event, "payload": payload,
                                           "ref": ref}))

    async def raw(self, text: str) -> None:
        await self.ws.send(text)

    async def subscribed(self, topic: str) -> None:
        await self.push(self.joins[topic], None, topic, "system",
                        {"extension": "postgres_changes", "status": "ok",
                         "message": "Subscribed to PostgreSQL", "channel": topic[9:]})

    async def change(self, topic: str, type_: str, record: dict[str, Any],
                     table: str | None = None) -> None:
        data: dict[str, Any] = {"schema": "public", "table": table or topic[9:], "type": type_,
                                "commit_timestamp": "2026-11-24T12:00:00.000Z",
                                "columns": [], "errors": None}
        if type_ != "DELETE":
            data["record"] = record
        if type_ != "INSERT":
            data["old_record"] = {"id": record.get("id")}
        await self.push(None, None, topic, "postgres_changes", {"ids": [1], "data": data})


@dataclass
class FakePhoenix:
    """Answers joins (ok, or ``join_error``), heartbeats (unless ``mute_heartbeat``);
    ``auto_subscribe`` sends "Subscribed to PostgreSQL" right after the join reply."""

    auto_subscribe: bool = True
    mute_heartbeat: bool = False
    join_error: str | None = None
    refuse_status: int | None = None
    conns: list[Conn] = field(default_factory=list)
    new_conn: asyncio.Event = field(default_factory=asyncio.Event)
    got: asyncio.Queue[tuple[Conn, tuple[Any, ...]]] = field(default_factory=asyncio.Queue)
    url: str = ""

    async def __aenter__(self) -> FakePhoenix:
        self._server = await serve(self._handler, "127.0.0.1", 0,
                                   process_request=self._process_request)
        port = self._server.sockets[0].getsockname()[1]  # type: ignore[index]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is not None:
            body = json.dumps({"error": "Too many connected users"}).encode()
            return Response(self.refuse_status, "Refused", Headers(), body)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)  # type: ignore[union-attr]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        conn = Conn(ws, query.get("vsn", "1.0.0"), query)
        self.conns.append(conn)
        self.new_conn.set()
        async for frame in ws:
            msg = self._decode(conn, str(frame))
            conn.received.append(msg)
            await self.got.put((conn, msg))
            join_ref, ref, topic, event, payload = msg
            if topic == "phoenix" and event == "heartbeat" and not self.mute_heartbeat:
                await conn.push(None, ref, "phoenix", "phx_reply",
                                {"status": "ok", "response": {}})
            elif event == "phx_join":
                await self._join(conn, ref, topic, payload)
            elif event == "phx_leave":
                await conn.push(join_ref, ref, topic, "phx_reply",
                                {"status": "ok", "response": {}})

    async def _join(self, conn: Conn, ref: str, topic: str, payload: Any) -> None:
        if self.join_error:
            await conn.push(ref, ref, topic, "phx_reply",
                            {"status": "error", "response": {"reason": self.join_error}})
            return
        conn.joins[topic] = ref
        pc = [dict(p, id=1) for p in payload["config"]["postgres_changes"]]
        await conn.push(ref, ref, topic, "phx_reply",
                        {"status": "ok", "response": {"postgres_changes": pc}})
        if self.auto_subscribe:
            await conn.subscribed(topic)

    @staticmethod
    def _decode(conn: Conn, text: str) -> tuple[Any, ...]:
        data = json.loads(text)
        if conn.vsn == "2.0.0":
            assert isinstance(data, list) and len(data) == 5, text
            return tuple(data)
        assert isinstance(data, dict) and {"topic", "event", "payload", "ref"} <= set(data)
        return (data.get("join_ref"), data["ref"], data["topic"], data["event"],
                data["payload"])

    async def next(self, event: str, timeout: float = 5.0) -> tuple[Conn, tuple[Any, ...]]:
        """The next client message with ``event`` (others are skipped)."""
        async def wait() -> tuple[Conn, tuple[Any, ...]]:
            while True:
                conn, msg = await self.got.get()
                if msg[3] == event:
                    return conn, msg
        return await asyncio.wait_for(wait(), timeout)
