"""The status page as a Starlette app: HTML page, JSON API, SSE, /metrics, /healthz.

Only this package imports Starlette/uvicorn. Everything shown comes from a
:class:`~tablesync.web.provider.StatusProvider`; strings that look like credentials
(JWTs, bearer tokens) are masked before anything is sent, and integers JavaScript cannot
hold exactly (HLC versions: every ``_ts_*`` integer, and any beyond 2^53) are sent as
strings. Every route but ``/healthz``, ``/metrics`` and the static assets needs the
session cookie or the API token (:mod:`tablesync.web.auth`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, AsyncIterator, Callable, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablesync.errors import TablesyncError
from tablesync.parked import KINDS
from tablesync.status import health
from tablesync.web.auth import BEARER, PUBLIC_PATHS, Auth
from tablesync.web.prometheus import CONTENT_TYPE, engine_registry, exposition
from tablesync.web.provider import StatusProvider, parked_store

CSRF_HEADER = "X-CSRF-Token"
DEFAULT_CONFLICT_LIMIT = 50
MAX_CONFLICT_LIMIT = 500
JS_SAFE = 2**53 - 1  # larger integers lose digits in JavaScript: sent as strings
VERSION_KEYS = frozenset({"version", "base"})  # conflict log: [hlc, origin] pairs
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_SECRET_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:apikey|api_key|password|refresh_token|access_token)[\"']?\s*[:=]\s*[\"']?)"
               r"[^\s\"'&,;]+"),
]


@dataclass
class WebOptions:
    """Knobs of the status app (tests shorten the intervals)."""

    poll_interval_s: float = 0.25
    heartbeat_s: float = 15.0
    max_stream_s: float = 3600.0  # an SSE connection ends after this; the browser reconnects
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    link_ttl_s: float = 600.0  # a one-time page link expires after this
    stop: threading.Event = field(default_factory=threading.Event)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credential-looking substrings replaced by ``***``."""
    if isinstance(value, str):
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(_mask, value)
        return value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def exact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with version integers (``_ts_*`` keys, and the ``version`` and
    ``base`` pairs of the conflict log) and any integer beyond 2^53 as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if key.startswith("_ts_") or abs(value) > JS_SAFE else value
    if isinstance(value, dict):
        return {k: exact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if key in VERSION_KEYS:  # a [hlc, origin] pair
            return [str(v) if type(v) is int else exact(v) for v in value]
        return [exact(v, key) for v in value]
    return value


def _mask(match: re.Match[str]) -> str:
    return (match.group(1) if match.groups() else "") + "***"


def create_app(provider: StatusProvider, options: WebOptions | None = None) -> Starlette:
    """The status app for one provider."""
    opts = options or WebOptions()
    auth = Auth(api_token=opts.api_token, link_ttl_s=opts.link_ttl_s)
    routes = [
        Route("/", _page, methods=["GET"]),
        Route("/static/app.js", _static("app.js", "text/javascript"), methods=["GET"]),
        Route("/static/app.css", _static("app.css", "text/css"), methods=["GET"]),
        Route("/favicon.ico", _no_content, methods=["GET"]),
        Route("/api/status", _status, methods=["GET"]),
        Route("/api/conflicts", _conflicts, methods=["GET"]),
        Route("/api/sync", _sync, methods=["POST"]),
        Route("/api/reset", _reset, methods=["POST"]),
        Route("/api/parked", _parked, methods=["GET"]),
        Route("/api/parked/retry", _parked_action, methods=["POST"]),
        Route("/api/parked/drop", _parked_action, methods=["POST"]),
        Route("/api/link", _link, methods=["POST"]),
        Route("/api/events", _events, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    middleware = [
        Middleware(_SecurityHeaders),
        Middleware(_HostCheck, allowed_hosts=opts.allowed_hosts),
        Middleware(_Authenticate, auth=auth),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={_ProviderFailure: _provider_failed})
    app.state.provider = provider
    app.state.options = opts
    app.state.auth = auth
    # one registry per app (= per engine); looked up per scrape, as every other route does
    app.state.registry = engine_registry(lambda: provider.snapshot(), lambda: provider.metrics())
    app.state.sse_clients = 0
    return app


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _HostCheck:
    """Refuses requests whose ``Host`` is not an allowed name (DNS-rebinding guard; on
    every bind address, 0.0.0.0 included)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if name in self.allowed:
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse("Invalid host header", status_code=400)
        await response(scope, receive, send)


class _Authenticate:
    """Lets through public paths and requests carrying the session cookie or the API
    token (recorded as ``scope["state"]["auth"]``); logs in ``GET /?token=``; 401 else."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["path"] == "/" and "token" in request.query_params:
            response = self.auth.login(request)
        else:
            kind = self.auth.identify(request)
            if kind is not None:
                scope.setdefault("state", {})["auth"] = kind
                await self.app(scope, receive, send)
                return
            response = self.auth.refuse(request)
        await response(scope, receive, send)


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:80`` -> ``::1``, ``Example:80`` -> ``example``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _ProviderFailure(Exception):
    """The provider raised; answered as 503 with the (redacted) reason."""


_T = TypeVar("_T")


async def _call(fn: Callable[..., _T], *args: Any) -> _T:
    """Run a (possibly blocking) provider method on the thread pool."""
    try:
        return await run_in_threadpool(fn, *args)
    except Exception as exc:
        raise _ProviderFailure(f"status unavailable: {type(exc).__name__}: {exc}") from exc


async def _provider_failed(request: Request, exc: Exception) -> Response:
    return _error(503, redact(str(exc)))


def _json(data: Any, status: int = 200) -> Response:
    """JSON with credentials masked; values JSON lacks (datetimes...) become strings."""
    body = json.dumps(exact(redact(data)), default=str)
    return Response(body, status_code=status, media_type="application/json")


def _provider(request: Request) -> StatusProvider:
    provider: StatusProvider = request.app.state.provider
    return provider


def _options(request: Request) -> WebOptions:
    opts: WebOptions = request.app.state.options
    return opts


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _read_asset(name: str) -> str:
    return (resources.files("tablesync.web") / name).read_text(encoding="utf-8")


def _static(name: str, media_type: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return Response(_read_asset(name), media_type=media_type)

    return endpoint


async def _no_content(request: Request) -> Response:
    return Response(status_code=204)


async def _page(request: Request) -> Response:
    html = _read_asset("index.html").replace("{{csrf_token}}", _options(request).csrf_token)
    return Response(html, media_type="text/html")


async def _status(request: Request) -> Response:
    snap = await _call(_provider(request).snapshot)
    return _json(snap.to_dict())


async def _conflicts(request: Request) -> Response:
    raw = request.query_params.get("limit", str(DEFAULT_CONFLICT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_CONFLICT_LIMIT:
        return _error(400, f"limit must be an integer from 1 to {MAX_CONFLICT_LIMIT}, got {raw!r}")
    rows = await _call(_provider(request).conflicts, int(raw))
    return _json({"conflicts": rows})


def cross_site_reason(request: Request, token: str) -> str | None:
    """Why a mutating request must be refused, or None when it is same-origin with the token."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    if origin is None and site is None:
        return "missing Origin header; send Origin: http://<host>:<port>"
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != expected:
        return f"cross-origin request refused (Origin {origin!r} is not {expected!r})"
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return f"missing or wrong {CSRF_HEADER} header; reload the status page"
    return None


def _refusal(request: Request) -> str | None:
    """Why a POST must be refused: cookie-authenticated ones need the same origin and the
    CSRF token of the page; the API token cannot be sent by another site's page."""
    if request.scope.get("state", {}).get("auth") == BEARER:
        return None
    return cross_site_reason(request, _options(request).csrf_token)


async def _sync(request: Request) -> Response:
    reason = _refusal(request)
    if reason is not None:
        return _error(403, reason)
    try:
        await run_in_threadpool(_provider(request).request_sync)
    except TablesyncError as exc:
        return _error(503, str(exc))
    except Exception as exc:  # the engine's bug, reported rather than a bare 500
        return _error(503, f"sync request failed: {type(exc).__name__}: {exc}")
    return _json({"status": "requested"}, 202)


async def _reset(request: Request) -> Response:
    """``tablesync sync reset`` against the running engine (same CSRF rules as sync)."""
    reason = _refusal(request)
    if reason is not None:
        return _error(403, reason)
    reset = getattr(_provider(request), "reset", None)
    if reset is None:
        return _error(501, "this status provider cannot reset")
    discard = request.query_params.get("discard_pending") == "1"
    try:
        result = await run_in_threadpool(lambda: reset(discard_pending=discard))
    except TablesyncError as exc:
        return _error(409, str(exc))
    except Exception as exc:  # the engine's bug, reported rather than a bare 500
        return _error(503, f"reset failed: {type(exc).__name__}: {exc}")
    return _json({"discarded": result.discarded, "removed_rows": result.removed_rows,
                  "backup": str(result.backup) if result.backup else None})


async def _parked(request: Request) -> Response:
    """Parked pushes and refused pulls with their reasons (versions as strings)."""
    store = parked_store(_provider(request))
    if store is None:
        return _json({"parked": [], "actions": False})
    records = await _call(store.parked_records)
    return _json({"parked": [r.to_dict() for r in records], "actions": True})


async def _parked_action(request: Request) -> Response:
    """``POST /api/parked/retry|drop?table=&record_id=[&kind=push|pull]``."""
    reason = _refusal(request)
    if reason is not None:
        return _error(403, reason)
    store = parked_store(_provider(request))
    if store is None:
        return _error(501, "this status provider keeps no parked records")
    q = request.query_params
    table, rid, kind = q.get("table", ""), q.get("record_id", ""), q.get("kind") or None
    if not table or not rid or (kind is not None and kind not in KINDS):
        return _error(400, "give table, record_id and optionally kind=push|pull")
    drop = request.url.path.endswith("/drop")
    try:
        if drop:
            path = await run_in_threadpool(store.drop_parked, table, rid, None, kind)
        else:
            released = await run_in_threadpool(store.retry_parked, table, rid, kind)
    except TablesyncError as exc:
        return _error(409, str(exc))
    except Exception as exc:  # the store's bug, reported rather than a bare 500
        return _error(503, f"{'drop' if drop else 'retry'} failed: {type(exc).__name__}: {exc}")
    if drop:
        return _json({"dropped": f"{table} {rid}", "backup": str(path)})
    try:  # push the released record now rather than at the next interval
        await run_in_threadpool(_provider(request).request_sync)
    except Exception:  # a stopped engine: it goes at the next start
        pass
    return _json({"released": released})


async def _link(request: Request) -> Response:
    """A fresh one-time page link (``tablesync sync page``); API token only."""
    if request.scope.get("state", {}).get("auth") != BEARER:
        return _error(403, "a page link needs the API token (tablesync sync page)")
    token = request.app.state.auth.mint_link()
    return _json({"url": f"{request.url.scheme}://{request.headers.get('host', '')}"
                         f"/?token={token}"}, 201)


async def _metrics(request: Request) -> Response:
    registry = request.app.state.registry
    try:  # the collector reads the provider's status: off the event loop
        text = await run_in_threadpool(exposition, registry)
    except Exception as exc:  # a scrape error, not a page
        message = redact(f"# status unavailable: {type(exc).__name__}: {exc}\n")
        return Response(message, status_code=503, media_type=CONTENT_TYPE)
    return Response(redact(text), media_type=CONTENT_TYPE)


async def _healthz(request: Request) -> Response:
    try:
        snap = await run_in_threadpool(_provider(request).snapshot)
    except Exception as exc:  # an unhealthy answer beats a 500 for a health check
        reasons = [redact(f"status unavailable: {type(exc).__name__}: {exc}")]
        return _json({"status": "unhealthy", "reasons": reasons}, 503)
    ok, reasons = health(snap)
    if ok:
        return _json({"status": "ok"})
    return _json({"status": "unhealthy", "reasons": reasons}, 503)


async def _events(request: Request) -> Response:
    headers = {"X-Accel-Buffering": "no"}
    return StreamingResponse(_event_stream(request), media_type="text/event-stream",
                             headers=headers)


async def _event_stream(request: Request) -> AsyncIterator[str]:
    """SSE: a ``status`` event whenever the snapshot changes, heartbeat comments between.

    Ends on server stop, after ``max_stream_s`` (the browser reconnects), or when the
    client goes away (Starlette cancels the stream).
    """
    opts, provider, state = _options(request), _provider(request), request.app.state
    state.sse_clients += 1
    try:
        yield "retry: 2000\n\n"
        last_key: str | None = None
        start = last_sent = time.monotonic()
        while not opts.stop.is_set() and time.monotonic() - start < opts.max_stream_s:
            event, key = await _next_event(provider)
            if key != last_key:
                last_key, last_sent = key, time.monotonic()
                yield event
            elif time.monotonic() - last_sent >= opts.heartbeat_s:
                last_sent = time.monotonic()
                yield ": heartbeat\n\n"
            await asyncio.sleep(opts.poll_interval_s)
    finally:
        state.sse_clients -= 1


async def _next_event(provider: StatusProvider) -> tuple[str, str]:
    """The SSE frame for the current snapshot and its change key."""
    try:
        snap = await run_in_threadpool(provider.snapshot)
    except Exception as exc:  # shown on the page; the stream keeps polling
        body = json.dumps({"error": redact(f"{type(exc).__name__}: {exc}")})
        return f"event: failure\ndata: {body}\n\n", body
    data = redact(snap.to_dict())
    return f"event: status\ndata: {json.dumps(data, default=str)}\n\n", _change_key(data)


def _change_key(data: dict[str, Any]) -> str:
    """Snapshot identity for change detection: ignores generation time, ages to the second."""
    key = {k: v for k, v in data.items() if k != "generated_at"}
    for name in ("oldest_queued_age_s", "websocket_down_s"):
        if isinstance(key.get(name), (int, float)):
            key[name] = int(key[name])
    return json.dumps(key, sort_keys=True, default=str)
