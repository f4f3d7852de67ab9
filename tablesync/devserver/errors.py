"""The devserver's own errors, and the HTTP error shapes of the services it imitates.

The devserver is a separate program that happens to ship in the same wheel: it imports
nothing from the rest of ``tablesync`` (``tests/test_layering.py``), so it has its own
exception tree::

    DevServerError           starting, stopping, applying SQL, change capture
    ├── TokenError           a JWT the server refuses (``status``, ``code``)
    └── PayloadError         a malformed client frame / subscription / captured change

``cli.py`` and ``demo.py`` turn a ``DevServerError`` into the CLI's one red line.

Error response shapes:

* Gateway (Kong): ``{"message", "hint"}`` (no ``code``), protocol doc section 2.1.
* PostgREST: ``{"code", "details", "hint", "message"}`` with the SQLSTATE -> HTTP map.
* GoTrue: ``{"code": <status>, "error_code", "msg"}`` or, with
  ``X-Supabase-Api-Version: 2024-01-01``, ``{"code": <error_code>, "message"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

API_VERSION = "2024-01-01"


class DevServerError(Exception):
    """Base of every error the devserver raises on purpose (one line, optional ``hint``)."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class TokenError(DevServerError):
    """A token the server refuses; ``status`` and ``code`` as the service answers."""

    def __init__(self, message: str, *, status: int = 401, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class PayloadError(DevServerError):
    """A client frame, subscription or captured change the server cannot use."""


class HTTPFailure(Exception):
    """Raised inside a handler; the app turns it into :meth:`response`."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("message") or body.get("msg") or str(status))
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        from starlette.responses import JSONResponse

        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def gateway_error(message: str, hint: str) -> HTTPFailure:
    """The API gateway's 401 (missing / invalid ``apikey``)."""
    return HTTPFailure(401, {"message": message, "hint": hint})


REFRESH_CONFLICT = ("Too many concurrent token refresh requests on the same session or refresh "
                    "token")  # GoTrue's 409 conflict (tokens/service.go)
NO_API_KEY = ("No API key found in request", "No `apikey` request header or url param was found.")
BAD_API_KEY = ("Invalid API key", "Double check your Supabase `anon` or `service_role` API key.")


def pgrst(status: int, code: str, message: str, details: str | None = None,
          hint: str | None = None, headers: dict[str, str] | None = None) -> HTTPFailure:
    """A PostgREST error body (always the four keys)."""
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return HTTPFailure(status, body, headers)


def bad_query(message: str, details: str | None = None) -> HTTPFailure:
    """400 PGRST100: the query string could not be parsed."""
    return pgrst(400, "PGRST100", message, details)


def jwt_failure(message: str, *, expired: bool, expired_code: str = "PGRST303") -> HTTPFailure:
    """401 for a refused Bearer token, with PostgREST's ``WWW-Authenticate`` header."""
    desc = message.replace('"', "'")
    header = f'Bearer error="invalid_token", error_description="{desc}"'
    return pgrst(401, expired_code if expired else "PGRST301", message,
                 headers={"WWW-Authenticate": header})


def sqlstate_status(sqlstate: str, role: str) -> int:
    """PostgREST's ``mapSQLtoHTTP`` (protocol doc section 2.6)."""
    if sqlstate in ("23505", "23503"):
        return 409
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate in ("42P01", "42883"):
        return 404
    if sqlstate == "P0001":
        return 400
    if sqlstate == "PT409":
        return 409
    if sqlstate == "53400":
        return 500
    if sqlstate[:2] in ("08", "53"):
        return 503
    if sqlstate[:2] in ("57", "40", "XX"):
        return 500
    if sqlstate == "25006":
        return 405
    if sqlstate[:2] in ("28", "0P", "0L"):
        return 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return 400


def gotrue(status: int, error_code: str, msg: str, *, new_shape: bool,
           extra: dict[str, Any] | None = None) -> HTTPFailure:
    """A GoTrue error in the shape the client asked for (``X-Supabase-Api-Version``)."""
    headers = {"x-sb-error-code": error_code}
    if new_shape:
        body: dict[str, Any] = {"code": error_code, "message": msg}
        headers["X-Supabase-Api-Version"] = API_VERSION
    else:
        body = {"code": status, "error_code": error_code, "msg": msg}
    body.update(extra or {})
    return HTTPFailure(status, body, headers)
