"""The web status page: HTML, JSON API, live updates (SSE), /metrics and /healthz.

The only package that imports Starlette/uvicorn. The engine plugs in through
:class:`StatusProvider`.
"""

from __future__ import annotations

from tablesync.web.app import CSRF_HEADER, WebOptions, create_app, redact
from tablesync.web.provider import CONFLICT_FIELDS, MemoryStatusProvider, StatusProvider
from tablesync.web.server import StatusServer

__all__ = [
    "CONFLICT_FIELDS",
    "CSRF_HEADER",
    "MemoryStatusProvider",
    "StatusProvider",
    "StatusServer",
    "WebOptions",
    "create_app",
    "redact",
]
