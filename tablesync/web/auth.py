"""Who may see the status page and use its API (docs/operations.md, "Access").

Three secrets per server run, none of which ``GET /`` hands out:

* the **API token** (bearer): in the engine's 0600 control file next to the database; the
  CLI sends it as ``Authorization: Bearer ...``;
* **one-time link tokens**: ``GET /?token=...`` with one (minted by
  :meth:`Auth.mint_link`, printed by the engine at start and by ``tablesync sync page``)
  consumes it, sets the session cookie and redirects to ``/``; they expire after
  ``link_ttl_s`` and at most ``max_links`` are outstanding;
* the **session secret**: the value of the HttpOnly, SameSite=Strict cookie the link sets.
  Its name carries the port (cookies are shared by every port of a host).

``/healthz``, ``/metrics`` and the static assets stay open (probes and scrapers need them;
they carry no row data and no secret). Everything else answers 401 without one of the two.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/static/app.js", "/static/app.css",
                          "/favicon.ico"})
COOKIE_PREFIX = "tablesync_session_"
BEARER, COOKIE = "bearer", "cookie"

UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tablesync status: sign-in needed</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><main class="auth-needed" data-testid="auth-needed">
<h1>This status page needs a link</h1>
<p>The page shows row data and can discard unsynced changes, so it opens only through a
one-time link. The engine prints one when it starts; for a fresh one run</p>
<pre>tablesync sync page</pre>
<p>in the project folder (it reads the engine's 0600 token file) and open the link it
prints in this browser.</p>
</main></body></html>
"""


class Auth:
    """The secrets of one server run and the checks that use them (thread-safe)."""

    def __init__(self, *, api_token: str | None = None, link_ttl_s: float = 600.0,
                 max_links: int = 16) -> None:
        self.api_token = api_token or secrets.token_urlsafe(32)
        self.session_secret = secrets.token_urlsafe(32)
        self.link_ttl_s, self.max_links = link_ttl_s, max_links
        self._links: dict[str, float] = {}  # one-time token -> expiry (monotonic s)
        self._lock = threading.Lock()

    def mint_link(self) -> str:
        """A new one-time token (the oldest outstanding one is dropped past ``max_links``)."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            links = self._links
            for old in [t for t, until in links.items() if until <= now]:
                del links[old]
            while len(links) >= self.max_links:     # bounded: one removed per turn
                del links[min(links, key=links.__getitem__)]
            links[token] = now + self.link_ttl_s
        return token

    def consume_link(self, token: str) -> bool:
        """Is ``token`` an outstanding, unexpired one-time token? It is used up either way."""
        with self._lock:
            until = self._links.pop(token, None)
        return until is not None and until > time.monotonic()

    def cookie_name(self, request: Request) -> str:
        server = request.scope.get("server") or ("", 0)
        return f"{COOKIE_PREFIX}{server[1]}"

    def identify(self, request: Request) -> str | None:
        """:data:`BEARER`, :data:`COOKIE`, or None when the request carries neither secret."""
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and _same(header[7:].strip(), self.api_token):
            return BEARER
        cookie = request.cookies.get(self.cookie_name(request))
        if cookie is not None and _same(cookie, self.session_secret):
            return COOKIE
        return None

    def login(self, request: Request) -> Response:
        """``GET /?token=``: a valid one-time token sets the cookie and redirects to ``/``."""
        if not self.consume_link(request.query_params.get("token", "")):
            return HTMLResponse(UNAUTHORIZED_PAGE.replace(
                "<h1>This status page needs a link</h1>",
                "<h1>This link was used or has expired</h1>"), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(self.cookie_name(request), self.session_secret, httponly=True,
                            samesite="strict", path="/")
        return response

    def refuse(self, request: Request) -> Response:
        """The 401 for a request without a secret: a page for ``/``, JSON for the API."""
        if request.url.path == "/":
            return HTMLResponse(UNAUTHORIZED_PAGE, status_code=401)
        return JSONResponse({"error": "authentication required: open the link `tablesync "
                                      "sync page` prints, or send the engine's API token"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _same(sent: str, secret: str) -> bool:
    return hmac.compare_digest(sent.encode(), secret.encode())
