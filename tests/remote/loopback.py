"""A tiny real HTTP server on 127.0.0.1 (uvicorn in a thread) whose answers tests script."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.requests import Request
from starlette.responses import Response


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Handler = Callable[[Seen], Reply]


@dataclass
class Scripted:
    """The ASGI app: every request is recorded and answered by ``handler``."""

    handler: Handler = lambda seen: (404, {"message": "no handler"})
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = Request(scope, receive)
        raw = await req.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(req.method, req.url.path, dict(req.query_params),
                    {k.lower(): v for k, v in req.headers.items()}, body)
        self.seen.append(seen)
        reply = self.handler(seen)
        status, payload = reply[0], reply[1]
        headers = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await Response(content, status, headers=headers, media_type="application/json")(
            scope, receive, send)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 in a thread; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            log_config=None,
                            lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("loopback server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
