"""The app's realtime seam: a service object is started, stopped and gets the websockets."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from starlette.websockets import WebSocket

from tablesync.devserver.server import DevServer

pytestmark = pytest.mark.postgres


class EchoRealtime:
    """Stands in for tablesync.devserver.realtime.RealtimeService (same interface)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def websocket_endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        message = await websocket.receive_text()
        await websocket.send_text(json.dumps({"echo": message,
                                              "vsn": websocket.query_params.get("vsn")}))
        await websocket.close()


def test_websocket_route_delegates_to_the_realtime_service(pg_dsn: str) -> None:
    service = EchoRealtime()
    srv = DevServer(dsn=pg_dsn, realtime=service)
    info = srv.start()
    try:
        assert service.events == ["start"]
        url = info.url.replace("http://", "ws://") + "/realtime/v1/websocket?vsn=1.0.0"

        async def talk() -> dict[str, str]:
            async with websockets.connect(url) as ws:
                await ws.send("hello")
                return json.loads(await ws.recv())  # type: ignore[no-any-return]

        assert asyncio.run(talk()) == {"echo": "hello", "vsn": "1.0.0"}
    finally:
        srv.stop()
    assert service.events == ["start", "stop"]
