"""The devserver's HTTP app: ``/auth/v1``, ``/rest/v1``, ``/realtime/v1/websocket``."""

from __future__ import annotations

import contextlib
import importlib.resources
from typing import Any, AsyncIterator, Protocol

from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tablesync.devserver.auth import AuthService
from tablesync.devserver.errors import HTTPFailure
from tablesync.devserver.faults import (FaultMiddleware, Faults, admin_endpoint,
                                        require_admin)
from tablesync.devserver.rest import RestService
from tablesync.devserver.settings import Settings

AUTHENTICATOR = "authenticator"


class RealtimeLike(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def websocket_endpoint(self, websocket: WebSocket) -> None: ...


def auth_schema_sql() -> str:
    return importlib.resources.files("tablesync.devserver").joinpath("auth_schema.sql").read_text()


def _default_realtime(settings: Settings) -> RealtimeLike | None:
    """The realtime helper's service when its module is installed, else None."""
    try:
        from tablesync.devserver.realtime import RealtimeService
    except ImportError:
        return None
    service: RealtimeLike = RealtimeService(
        dsn=settings.dsn, jwt_secret=settings.jwt_secret, anon_key=settings.anon_key,
        service_key=settings.service_key, clock=settings.clock, signing_key=settings.signing_key,
        api_keys={settings.publishable_key: settings.anon_key,
                  settings.secret_key: settings.service_key},
        toast_omission=settings.toast_omission, rate_limit=settings.realtime_rate_limit,
        private_only=settings.private_only_channels,
        max_payload_bytes=settings.realtime_max_payload_kb * 1000 + 500)
    return service


async def _http_failure(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPFailure)
    return exc.response()


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unrouted paths answer PostgREST's JSON error, never Starlette's plain text.

    Paths the routes cannot match at all (e.g. a newline in a table name) land here.
    """
    if request.url.path.startswith("/auth/"):
        return JSONResponse({"code": 404, "error_code": "not_found", "msg": "Not Found"}, 404)
    return JSONResponse({"code": "PGRST125", "details": None, "hint": None,
                         "message": "Invalid path specified in request URL"}, 404)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug must still answer JSON (PostgREST/GoTrue never answer text/plain)."""
    if request.url.path.startswith("/auth/"):
        return JSONResponse({"code": 500, "error_code": "unexpected_failure",
                             "msg": "Unexpected failure, please check server logs for more "
                             "information"}, 500)
    return JSONResponse({"code": "XX000", "details": None, "hint": None,
                         "message": f"internal error: {type(exc).__name__}"}, 500)


def create_app(settings: Settings, realtime: RealtimeLike | None = None, *,
               faults: Faults | None = None, auto_realtime: bool = True) -> Starlette:
    """Build the app; pools open (and the auth schema is applied) in its lifespan."""
    admin_pool = AsyncConnectionPool(settings.dsn, min_size=1, max_size=4, open=False,
                                     kwargs={"autocommit": True}, name="devserver-admin")
    rest_dsn = make_conninfo(settings.dsn, user=AUTHENTICATOR)
    rest_pool = AsyncConnectionPool(rest_dsn, min_size=2, max_size=settings.pool_max, open=False,
                                    kwargs={"autocommit": True}, name="devserver-rest")
    rest = RestService(settings, rest_pool, admin_pool)
    auth = AuthService(settings, admin_pool)
    faults = faults or Faults()
    holder: dict[str, RealtimeLike | None] = {"rt": realtime}

    async def websocket(ws: WebSocket) -> None:
        service = holder["rt"]
        if service is None:
            await ws.close(code=1011, reason="realtime is not available")
            return
        await service.websocket_endpoint(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await admin_pool.open(wait=True, timeout=30)
        async with admin_pool.connection() as conn:
            await conn.execute(auth_schema_sql().encode())
            await rest.catalog.reload(conn)
        await rest_pool.open(wait=True, timeout=30)
        if holder["rt"] is None and auto_realtime:
            holder["rt"] = _default_realtime(settings)
        if holder["rt"] is not None:
            await holder["rt"].start()
        try:
            yield
        finally:
            if holder["rt"] is not None:
                await holder["rt"].stop()
            await rest_pool.close()
            await admin_pool.close()

    async def restart_capture(request: Request) -> Response:
        """``POST /_devserver/realtime/restart``: restart Realtime's change capture."""
        if (response := require_admin(request, settings)) is not None:
            return response
        service = holder["rt"]
        restart = getattr(service, "restart_capture", None)
        if restart is None:
            return JSONResponse({"message": "realtime is not running"}, 409)
        await restart()
        return JSONResponse({"ok": True}, 200)

    routes: list[Any] = [*auth.routes(), *rest.routes(),
                         WebSocketRoute("/realtime/v1/websocket", websocket),
                         Route("/_devserver/faults", admin_endpoint(settings, faults),
                               methods=["POST", "DELETE"]),
                         Route("/_devserver/realtime/restart", restart_capture,
                               methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPFailure: _http_failure, 404: _not_found,
                                        Exception: _unexpected},
                    middleware=[Middleware(FaultMiddleware, faults=faults,
                                           enabled=settings.enable_faults)])
    app.state.settings = settings
    app.state.faults = faults
    app.state.rest = rest
    app.state.realtime = lambda: holder["rt"]
    return app
