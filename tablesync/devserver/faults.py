"""Fault injection for tests (off by default): make REST or Auth answer 429/5xx on command.

Enabled with ``Settings.enable_faults``; driven in-process through :class:`Faults` or over
HTTP with ``POST/DELETE /_devserver/faults`` authorised by the service-role key.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablesync.devserver import jwt
from tablesync.devserver.errors import REFRESH_CONFLICT, HTTPFailure, gotrue, pgrst
from tablesync.devserver.gateway import bearer
from tablesync.devserver.settings import Settings

SURFACES = {"rest": "/rest/v1", "auth": "/auth/v1"}


@dataclass
class Fault:
    surface: str            # "rest" | "auth"
    status: int             # 429, 500, 502, 503, 504
    count: int | None = 1   # how many requests fail; None = until cleared
    retry_after: float | None = None
    path_prefix: str = ""   # e.g. "/rest/v1/rpc/" to fail only RPCs
    delay: float = 0.0      # seconds to wait first (status 0: then serve normally)
    after: bool = False     # serve the request (it commits), then answer the fault instead


class Faults:
    """A thread-safe list of pending faults (shared by the app and the tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def add(self, surface: str, status: int, *, count: int | None = 1,
            retry_after: float | None = None, path_prefix: str = "", delay: float = 0.0,
            after: bool = False) -> Fault:
        """Queue a fault: the next ``count`` matching requests answer ``status``.

        ``after=True`` lets the request run (and commit) and replaces its answer: a lost
        acknowledgement. ``delay`` waits first (with ``status=0`` the request is then
        served normally: a slow server, for client timeouts).
        """
        if surface not in SURFACES:
            raise ValueError(f"unknown fault surface {surface!r} (use rest or auth)")
        fault = Fault(surface, int(status), count, retry_after, path_prefix, float(delay),
                      bool(after))
        with self._lock:
            self._items.append(fault)
        return fault

    @property
    def pending(self) -> int:
        """How many faults are still waiting for a request."""
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, path: str) -> Fault | None:
        """The first fault matching ``path``, consuming one of its uses."""
        with self._lock:
            for fault in self._items:
                prefix = fault.path_prefix or SURFACES[fault.surface]
                if path.startswith(SURFACES[fault.surface]) and path.startswith(prefix):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._items.remove(fault)
                    return fault
        return None


def fault_response(fault: Fault) -> Response:
    """What Supabase's services answer for such a failure."""
    headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
    if fault.surface == "auth":
        if fault.status == 429:
            failure = gotrue(429, "over_request_rate_limit", "Request rate limit reached",
                             new_shape=False)
        elif fault.status == 409:  # GoTrue's refresh under contention (tokens/service.go)
            failure = gotrue(409, "conflict", REFRESH_CONFLICT, new_shape=False)
        else:
            failure = gotrue(fault.status, "unexpected_failure", "Unexpected failure, please "
                             "check server logs for more information", new_shape=False,
                             extra={"error_id": str(uuid.uuid4())})
        failure.headers.update(headers)
        return failure.response()
    if fault.status == 429:
        return JSONResponse({"message": "API rate limit exceeded"}, 429, headers)
    if fault.status == 503:
        headers.setdefault("Retry-After", "1")
        return pgrst(503, "PGRST001", "Database client error. Retrying the connection.",
                     headers=headers).response()
    if fault.status == 504:
        return pgrst(504, "PGRST003", "Timed out acquiring connection from connection pool.",
                     headers=headers).response()
    return pgrst(fault.status, "XX000", "injected fault", headers=headers).response()


class FaultMiddleware:
    """ASGI middleware answering with a pending fault before the app sees the request."""

    def __init__(self, app: ASGIApp, faults: Faults, enabled: bool) -> None:
        self.app, self.faults, self.enabled = app, faults, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.faults.take(scope["path"]) \
            if self.enabled and scope["type"] == "http" else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status == 0:
            await self.app(scope, receive, send)
            return
        if fault.after:
            await self.app(scope, receive, _discard)
        await fault_response(fault)(scope, receive, send)


async def _discard(message: Message) -> None:
    """An ASGI ``send`` that drops the app's real answer."""


def require_admin(request: Request, settings: Settings) -> Response | None:
    """The ``/_devserver/`` hooks' gate: 404 unless faults are enabled, 403 unless the
    Bearer is the service-role key (legacy JWT or ``sb_secret_...``); None when allowed."""
    if not settings.enable_faults:
        return JSONResponse({"message": "fault injection is disabled"}, 404)
    token = bearer(request) or ""
    token = settings.legacy_key(token) or token
    try:
        role = settings.verify(token).get("role")
    except jwt.JWTError:
        role = None
    if role != "service_role":
        raise HTTPFailure(403, {"message": "service_role key required"})
    return None


def admin_endpoint(settings: Settings, faults: Faults) -> Any:
    """``POST /_devserver/faults`` (add) and ``DELETE`` (clear); service-role key only."""

    async def endpoint(request: Request) -> Response:
        if (response := require_admin(request, settings)) is not None:
            return response
        if request.method == "DELETE":
            faults.clear()
            return Response(status_code=204)
        body = await request.json()
        try:
            faults.add(body["surface"], int(body["status"]), count=body.get("count", 1),
                       retry_after=body.get("retry_after"), path_prefix=body.get("path_prefix", ""),
                       delay=float(body.get("delay", 0)), after=bool(body.get("after", False)))
        except (KeyError, ValueError, TypeError) as exc:
            raise HTTPFailure(400, {"message": f"bad fault: {exc}"}) from exc
        return JSONResponse({"ok": True}, 201)

    return endpoint
