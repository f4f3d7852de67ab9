"""REST client for Supabase (GoTrue ``/auth/v1`` + PostgREST ``/rest/v1``); the only httpx user.

Blocking calls with timeouts, meant for the engine's worker thread. Every response is read
with a size cap and parsed defensively; failures become the typed errors of
:mod:`tablesync.remote.base`. A 401 "JWT expired" refreshes the token through the
:class:`~tablesync.remote.base.TokenSource` and retries the request once.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

import httpx

from tablesync.backoff import parse_retry_after
from tablesync.errors import AuthError, PayloadError, RemoteError, TransientRemoteError
from tablesync.model import TableSpec
from tablesync.remote.base import (
    MAX_PAGE, ApplyOutcome, DeadSessionError, EncodedRows, ExpiredTokenError, Page,
    ResponseTooLarge,
    TokenSource, error_for_status, page_of, parse_outcomes, row_checker,
)
from tablesync.vault import Secret, Tokens

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024       # 1000 rows of up to ~64 KB each
APPLY_RPC = "tablesync_apply_{table}"
WATERMARK_RPC = "tablesync_watermark"
# GoTrue error codes meaning the session is gone for good.
DEAD_SESSION_CODES = ("refresh_token_not_found", "refresh_token_already_used",
                      "session_expired", "session_not_found", "validation_failed",
                      "user_banned", "user_not_found")

__all__ = ["DEFAULT_MAX_RESPONSE", "DEFAULT_TIMEOUT", "RestRemote"]


class RestRemote:
    """Supabase REST + Auth client.

    Args:
        url: project URL (``https://<ref>.supabase.co`` or the devserver's URL).
        anon_key: the project's anon/publishable key (``apikey`` header).
        tables: table specs for validating pulled rows (unknown tables are not validated).
        tokens: where the user's access token comes from (None: anon key only).
        timeout: seconds per request (connect timeout is shorter).
        max_response: response size cap in bytes.
        transport: an httpx transport (tests, unix sockets); None for the default.
    """

    def __init__(self, url: str, anon_key: str | Secret, *,
                 tables: Mapping[str, TableSpec] | None = None,
                 tokens: TokenSource | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_response: int = DEFAULT_MAX_RESPONSE,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._anon = Secret(anon_key) if isinstance(anon_key, str) else anon_key
        self.tables = dict(tables or {})
        self.tokens = tokens
        self.max_response = max_response
        self._checkers: dict[str, tuple[TableSpec, Callable[[Any], bool]]] = {}
        self._client = httpx.Client(
            base_url=self.url, transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT)),
            headers={"Accept": "application/json", "X-Client-Info": "tablesync"})

    def __repr__(self) -> str:
        return f"RestRemote({self.url!r})"

    def close(self) -> None:
        self._client.close()

    def probe(self, timeout: float = 2.0) -> bool:
        """Does the backend answer at all? One GET of Auth's health endpoint; any HTTP
        status counts (a 503 answer means "reachable, but failing": the caller's backoff
        handles that), only a network error or timeout is "unreachable"."""
        try:
            self._client.get("/auth/v1/health", timeout=timeout,
                             headers={"apikey": self._anon.reveal()})
        except httpx.HTTPError:
            return False
        return True

    def __enter__(self) -> RestRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- auth (GoTrue)

    def sign_in(self, email: str, password: Secret | str) -> Tokens:
        """Email/password sign-in (``grant_type=password``)."""
        pw = password.reveal() if isinstance(password, Secret) else password
        body = self._auth_post("/auth/v1/token", {"grant_type": "password"},
                               {"email": email, "password": pw}, what="sign-in")
        return self._tokens(body, "sign-in")

    def refresh(self, refresh_token: Secret) -> Tokens:
        """Exchange a refresh token (rotates it); a dead session raises DeadSessionError."""
        try:
            body = self._auth_post("/auth/v1/token", {"grant_type": "refresh_token"},
                                   {"refresh_token": refresh_token.reveal()}, what="refresh")
        except AuthError as exc:
            if isinstance(exc, DeadSessionError):
                raise
            raise DeadSessionError(str(exc), status=exc.status, code=exc.code,
                                   hint="run `tablesync login`") from exc
        return self._tokens(body, "refresh")

    def admin_create_user(self, service_key: Secret, email: str, password: Secret,
                          app_metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Create a confirmed user with ``app_metadata`` (needs the service-role key)."""
        key = service_key.reveal()
        body = {"email": email, "password": password.reveal(), "email_confirm": True,
                "app_metadata": dict(app_metadata)}
        headers = {"apikey": key, "Authorization": f"Bearer {key}"}
        user = self._send("POST", "/auth/v1/admin/users", json_body=body, headers=headers,
                          what="create user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            raise PayloadError("create user: the answer has no user id")
        return user

    def _auth_post(self, path: str, params: dict[str, str], body: dict[str, Any], *,
                   what: str) -> Any:
        headers = {"apikey": self._anon.reveal(),
                   "Authorization": f"Bearer {self._anon.reveal()}"}
        try:
            return self._send("POST", path, params=params, json_body=body, headers=headers,
                              what=what)
        except RemoteError as exc:
            if exc.is_transient or exc.status is None or exc.status >= 500:
                raise
            if what == "refresh" and exc.status == 409:
                # GoTrue's refresh-token lock is held by a concurrent refresh of the same
                # token: not a dead session; retried with backoff (the same token is valid
                # again once the other refresh finished)
                raise TransientRemoteError(str(exc), status=409, code=exc.code,
                                           retry_after=1.0) from exc
            if what == "refresh" and (exc.code in DEAD_SESSION_CODES or exc.status == 400):
                raise DeadSessionError(str(exc), status=exc.status, code=exc.code,
                                       hint="run `tablesync login`") from exc
            if exc.status in (400, 401, 403, 422):
                raise AuthError(str(exc), status=exc.status, code=exc.code,
                                hint="check the email/password, then `tablesync login`") from exc
            raise

    @staticmethod
    def _tokens(body: Any, what: str) -> Tokens:
        try:
            access, refresh = body["access_token"], body["refresh_token"]
            user_id = body.get("user", {}).get("id") or ""
            if "expires_at" in body:
                expires_at = float(body["expires_at"])
            else:
                expires_at = time.time() + float(body["expires_in"])
            if not (isinstance(access, str) and isinstance(refresh, str) and access and refresh):
                raise TypeError
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PayloadError(f"{what}: malformed token response") from exc
        return Tokens(Secret(access), Secret(refresh), expires_at, str(user_id))

    # ------------------------------------------------------------ data (PostgREST)

    def apply(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[ApplyOutcome]:
        """Push ``rows`` through ``tablesync_apply_<table>``; one outcome per row."""
        if not rows:
            return []
        path = "/rest/v1/rpc/" + quote(APPLY_RPC.format(table=table), safe="")
        content = rows.body if isinstance(rows, EncodedRows) and rows.body else None
        body = self._data("POST", path, what=f"apply {table}", content=content,
                          json_body={"rows": list(rows)} if content is None else None)
        pk = self.tables[table].primary_key if table in self.tables else "id"
        return parse_outcomes(table, rows, body, pk)

    def watermark(self) -> int:
        """The server's safe catch-up watermark (oldest transaction id still running)."""
        body = self._data("POST", f"/rest/v1/rpc/{WATERMARK_RPC}", json_body={},
                          what="watermark")
        try:
            value = int(body) if not isinstance(body, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or value < 0:
            raise PayloadError(f"watermark: expected a non-negative integer, got {body!r:.60}")
        return value

    def claim(self, replica: str, lease_seconds: int) -> dict[str, Any]:
        """Claim this user's system id for ``replica`` (``rpc/tablesync_claim``):
        ``{"claimed": True, "fresh": ...}`` or ``{"claimed": False, "holder": ...,
        "seen_seconds_ago": ...}``. A server without the function answers 404."""
        body = self._data("POST", "/rest/v1/rpc/tablesync_claim",
                          json_body={"replica": replica, "lease_seconds": lease_seconds},
                          what="claim")
        if not isinstance(body, dict) or not isinstance(body.get("claimed"), bool):
            raise PayloadError(f"claim: expected an object with 'claimed', got {body!r:.60}")
        return body

    def release(self, replica: str) -> None:
        """Give the system id up at once (a clean stop), if ``replica`` holds it."""
        self._data("POST", "/rest/v1/rpc/tablesync_release", json_body={"replica": replica},
                   what="release")

    def pull_page(self, table: str, scope: str, system_id: str, cursor: int,
                  after_seq: int, limit: int = MAX_PAGE) -> Page:
        """Rows of ``table`` for ``system_id`` written by transactions >= ``cursor``,
        with change sequence > ``after_seq``, in sequence order (at most 1000)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        params = {"select": "*", _quoted(scope): f"eq.{system_id}", "_ts_xid": f"gte.{int(cursor)}",
                  "_ts_seq": f"gt.{int(after_seq)}", "order": "_ts_seq.asc",
                  "limit": str(limit)}
        try:
            body = self._rows(table, params, f"pull {table}")
        except ResponseTooLarge:
            if limit > 1:
                raise                           # the caller asks again for fewer rows
            return self._oversized_row(table, params)
        if len(body) > limit:
            raise PayloadError(f"pull {table}: {len(body)} rows for limit {limit}")
        return self._page(table, body)

    def fetch(self, table: str, scope: str, system_id: str, key: str,
              ids: Sequence[str]) -> Page:
        """The current rows of ``table`` with primary key ``key`` in ``ids`` (this
        system's scope only), e.g. to complete a Realtime record whose unchanged large
        values were left out (TOAST)."""
        ids = list(ids)[:MAX_PAGE]
        values = ",".join('"' + str(i).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for i in ids)
        params = {"select": "*", _quoted(scope): f"eq.{system_id}",
                  _quoted(key): f"in.({values})"}
        return self._page(table, self._rows(table, params, f"fetch {table}"))

    def probe_columns(self, table: str, columns: Sequence[str]) -> None:
        """Ask for no rows of ``columns`` of ``table``: returns when the server has them
        all; raises the server's error (404 PGRST205 for a missing table, 400 42703 naming
        a missing column: :func:`~tablesync.remote.base.server_behind`) otherwise."""
        params = {"select": ",".join(_quoted(c) for c in columns), "limit": "0"}
        self._rows(table, params, f"probe {table}")

    def _rows(self, table: str, params: dict[str, str], what: str) -> list[Any]:
        """GET ``table``'s rows matching ``params`` (PostgREST), checked to be an array."""
        body = self._data("GET", "/rest/v1/" + quote(table, safe=""), params=params, what=what)
        if not isinstance(body, list):
            raise PayloadError(f"{what}: expected a JSON array, got {type(body).__name__}")
        return body

    def _oversized_row(self, table: str, params: dict[str, str]) -> Page:
        """The next row alone is larger than the response cap: fetch only its key and
        sequence and return it as a rejected row (so the catch-up records it by table and
        id and goes on past it, instead of asking for it forever)."""
        spec = self.tables.get(table)
        keys = [spec.primary_key] if spec is not None else []
        body = self._data("GET", "/rest/v1/" + quote(table, safe=""),
                          params={**params, "select": ",".join([*keys, "_ts_seq"])},
                          what=f"pull {table} (key of an oversized row)")
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            raise PayloadError(f"pull {table}: the oversized row's key could not be read")
        row = body[0]
        seq = row.get("_ts_seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise PayloadError(f"pull {table}: the oversized row has no integer _ts_seq")
        rid = row.get(keys[0]) if keys else None
        err = PayloadError(f"pull {table}: row {rid!r} (_ts_seq {seq}) is larger than the "
                           f"{self.max_response}-byte response cap")
        return Page([], [err], 1, seq, [row])

    def _page(self, table: str, body: list[Any]) -> Page:
        spec = self.tables.get(table)
        return page_of(table, spec, body, self._checker(spec) if spec is not None else None)

    def _checker(self, spec: TableSpec) -> Callable[[Any], bool]:
        hit = self._checkers.get(spec.name)
        if hit is None or hit[0] is not spec:
            hit = self._checkers[spec.name] = (spec, row_checker(spec))
        return hit[1]

    # ------------------------------------------------------------------- plumbing

    def _data(self, method: str, path: str, *, what: str, json_body: Any = None,
              params: Mapping[str, str] | None = None, content: bytes | None = None) -> Any:
        """A PostgREST call as the signed-in user; refresh-and-retry once on expiry.
        ``content``: a JSON request body already encoded (sent as is)."""
        token = self.tokens.access_token() if self.tokens else None
        try:
            return self._send(method, path, json_body=json_body, params=params,
                              headers=self._data_headers(token), what=what, content=content)
        except ExpiredTokenError:
            if self.tokens is None:
                raise
            fresh = self.tokens.refresh_expired(token)
        return self._send(method, path, json_body=json_body, params=params,
                          headers=self._data_headers(fresh), what=what, content=content)

    def _data_headers(self, token: Secret | None) -> dict[str, str]:
        bearer = (token or self._anon).reveal()
        return {"apikey": self._anon.reveal(), "Authorization": f"Bearer {bearer}"}

    def _send(self, method: str, path: str, *, what: str, headers: dict[str, str],
              json_body: Any = None, params: Mapping[str, str] | None = None,
              content: bytes | None = None) -> Any:
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            with self._client.stream(method, path, params=params, content=content,
                                     headers=headers) as resp:
                raw = self._read_capped(resp, what)
                status, retry = resp.status_code, resp.headers.get("Retry-After")
        except httpx.TimeoutException as exc:
            raise TransientRemoteError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientRemoteError(f"{what}: network error: {type(exc).__name__}: "
                                       f"{_short(exc)}") from exc
        body = _parse_json(raw, what) if raw else None
        if status >= 400:
            if status in (429, 503) and isinstance(body, PayloadError):
                body = None
            err_body = raw.decode("utf-8", "replace") if isinstance(body, PayloadError) else body
            raise error_for_status(status, err_body, where=what,
                                   retry_after=parse_retry_after(retry))
        if isinstance(body, PayloadError):
            raise body
        return body

    def _read_capped(self, resp: httpx.Response, what: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_response:
            raise ResponseTooLarge(f"{what}: response of {declared} bytes exceeds the "
                                   f"{self.max_response}-byte cap")
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > self.max_response:
                raise ResponseTooLarge(f"{what}: response exceeds the "
                                       f"{self.max_response}-byte cap")
            chunks.append(chunk)
        return b"".join(chunks)


def _quoted(name: str) -> str:
    """A column name as a PostgREST filter key: double-quoted, so reserved parameter names
    (``order``, ``select``...) and reserved characters (``,.:()``) are read as a column."""
    return '"' + name + '"'


def _parse_json(raw: bytes, what: str) -> Any:
    """Parsed JSON, or a PayloadError *value* (the caller decides whether to raise it)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        return PayloadError(f"{what}: malformed JSON in the response ({_short(exc)})")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
