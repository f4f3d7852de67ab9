"""Test harness for the Realtime service: a real uvicorn server on 127.0.0.1 in a thread.

Used by tests/devserver/test_realtime*.py and bench/devserver_realtime.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from tablesync.devserver import jwt
from tablesync.devserver.realtime import RealtimeService

SECRET = "realtime-test-secret-with-at-least-32-characters"


def token(*, role: str = "authenticated", system_id: str | None = None, exp_in: float = 3600,
          sub: str | None = None, secret: str = SECRET, now: float | None = None,
          **extra: Any) -> str:
    """An HS256 access token shaped like Supabase's (role, sub, app_metadata.system_id, exp),
    issued at ``now`` (default: the machine's time)."""
    now = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": "authenticated", "role": role, "sub": sub or str(uuid.uuid4()),
        "email": "", "phone": "", "iat": now, "exp": int(now + exp_in),
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {}, "aal": "aal1", "session_id": str(uuid.uuid4()),
        "is_anonymous": False}
    if system_id is not None:
        claims["app_metadata"]["system_id"] = system_id
    if role == "anon":
        claims = {"iss": "supabase", "role": "anon", "iat": now, "exp": int(now + exp_in)}
    claims.update(extra)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret)


class RealtimeServer:
    """RealtimeService mounted at /realtime/v1/websocket of a uvicorn server in a thread."""

    def __init__(self, dsn: str, **service_kwargs: Any) -> None:
        self.anon_key = token(role="anon", exp_in=86400)
        self.service_key = token(role="service_role", exp_in=86400)
        self.service = RealtimeService(dsn=dsn, jwt_secret=SECRET, anon_key=self.anon_key,
                                       service_key=self.service_key, **service_kwargs)
        app = Starlette(routes=[WebSocketRoute("/realtime/v1/websocket",
                                               self.service.websocket_endpoint)],
                        lifespan=self._lifespan)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                log_config=None, ws="websockets-sansio", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="realtime-uvicorn",
                                        daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    async def _lifespan_impl(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.service.start()

    def _lifespan(self, app: Starlette) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def span() -> Any:
            await self._lifespan_impl()
            try:
                yield
            finally:
                await self.service.stop()
        return span()

    def start(self) -> "RealtimeServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("realtime test server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realtime/v1"

    def ws_url(self, apikey: str | None = None, vsn: str = "1.0.0") -> str:
        key = self.anon_key if apikey is None else apikey
        return f"ws://127.0.0.1:{self.port}/realtime/v1/websocket?apikey={key}&vsn={vsn}"


class Phoenix:
    """A raw Phoenix client over ``websockets`` for protocol-level tests (vsn 1 or 2)."""

    def __init__(self, ws: Any, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(self, topic: str, event: str, payload: Any, *, ref: str | None = None,
                   join_ref: str | None = None) -> str:
        ref = ref if ref is not None else self.next_ref()
        if self.vsn.startswith("2"):
            frame: Any = [join_ref, ref, topic, event, payload]
        else:
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                frame["join_ref"] = join_ref
        await self.ws.send(json.dumps(frame))
        return ref

    def normalize(self, raw: Any) -> dict[str, Any]:
        """Frames as dicts (v2 arrays mapped to the v1 keys plus join_ref)."""
        data = json.loads(raw)
        if self.vsn.startswith("2"):
            assert isinstance(data, list) and len(data) == 5, data
            return {"join_ref": data[0], "ref": data[1], "topic": data[2], "event": data[3],
                    "payload": data[4], "raw": data}
        assert isinstance(data, dict), data
        return {**data, "raw": data}

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.normalize(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv_until(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("expected frame did not arrive")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    async def join(self, topic: str, changes: list[dict[str, Any]], access_token: str | None,
                   ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"config": {
            "broadcast": {"ack": False, "self": False}, "presence": {"enabled": False, "key": ""},
            "postgres_changes": changes, "private": False}}
        if access_token is not None:
            payload["access_token"] = access_token
        ref = self.next_ref()
        await self.send(topic, "phx_join", payload, ref=ref, join_ref=ref)
        reply = await self.recv_until(lambda m: m["event"] == "phx_reply" and m["ref"] == ref)
        return ref, reply

    async def join_live(self, topic: str, changes: list[dict[str, Any]],
                        access_token: str | None) -> tuple[str, dict[str, Any]]:
        """Join and wait for "Subscribed to PostgreSQL"."""
        ref, reply = await self.join(topic, changes, access_token)
        assert reply["payload"]["status"] == "ok", reply
        msg = await self.recv_until(lambda m: m["event"] == "system")
        assert msg["payload"]["message"] == "Subscribed to PostgreSQL", msg
        return ref, reply
