"""The GoTrue-compatible ``/auth/v1`` endpoints (password + refresh grants, signup, user,
logout, admin users). Users, sessions and refresh tokens live in schema ``auth``."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tablesync.devserver import auth_store as store
from tablesync.devserver import jwt
from tablesync.devserver.errors import API_VERSION, REFRESH_CONFLICT, HTTPFailure, gotrue
from tablesync.devserver.gateway import bearer, require_apikey
from tablesync.devserver import passwords
from tablesync.devserver.settings import Settings

ADMIN_ROLES = ("service_role", "supabase_admin")
LOCKED = store.LOCKED
MIN_PASSWORD = 6
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's user object (``internal/models/user.go``); empty optional keys omitted."""
    uid = str(row["id"])
    out: dict[str, Any] = {
        "id": uid, "aud": row["aud"], "role": row["role"], "email": row["email"] or "",
        "phone": row["phone"] or "",
        "app_metadata": row["raw_app_meta_data"], "user_metadata": row["raw_user_meta_data"],
        "identities": [_identity(row)] if row["email"] else [],
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
        "is_anonymous": row["is_anonymous"],
    }
    for key in ("email_confirmed_at", "confirmation_sent_at", "last_sign_in_at"):
        if row[key] is not None:
            out[key] = _iso(row[key])
    if row["email_confirmed_at"] is not None:
        out["confirmed_at"] = _iso(row["email_confirmed_at"])
    if row["banned_until"] is not None:
        out["banned_until"] = _iso(row["banned_until"])
    return out


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    uid = str(row["id"])
    return {
        "identity_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "tablesync-identity:" + uid)),
        "id": uid, "user_id": uid, "provider": "email", "email": row["email"],
        "identity_data": {"email": row["email"], "email_verified": False,
                          "phone_verified": False, "sub": uid},
        "last_sign_in_at": _iso(row["last_sign_in_at"] or row["created_at"]),
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
    }


async def hash_password(password: str) -> str:
    """scrypt in a worker thread: it takes tens of ms and must not stall the event loop."""
    return await asyncio.to_thread(passwords.hash_password, password)


async def verify_password(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(passwords.verify_password, password, stored)


async def _maybe_hash(password: Any) -> str | None:
    return await hash_password(str(password)) if password else None


def _jwt_detail(exc: jwt.JWTError) -> str:
    if exc.expired:
        return "token has invalid claims: token is expired"
    if str(exc).startswith("Expected 3 parts"):
        return "token is malformed: token contains an invalid number of segments"
    return "token signature is invalid: signature is invalid"


class AuthService:
    """Holds the pool and settings; each public coroutine is one endpoint."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.pool = pool

    def routes(self) -> list[Route]:
        return [
            Route("/auth/v1/token", self.token, methods=["POST"]),
            Route("/auth/v1/signup", self.signup, methods=["POST"]),
            Route("/auth/v1/user", self.get_user, methods=["GET"]),
            Route("/auth/v1/user", self.put_user, methods=["PUT"]),
            Route("/auth/v1/logout", self.logout, methods=["POST"]),
            Route("/auth/v1/admin/users", self.admin_create, methods=["POST"]),
            Route("/auth/v1/admin/users", self.admin_list, methods=["GET"]),
            Route("/auth/v1/admin/users/{uid}", self.admin_get, methods=["GET"]),
            Route("/auth/v1/admin/users/{uid}", self.admin_update, methods=["PUT"]),
            Route("/auth/v1/admin/users/{uid}", self.admin_delete, methods=["DELETE"]),
            Route("/auth/v1/health", self.health, methods=["GET"]),
            Route("/auth/v1/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/auth/v1/settings", self.public_settings, methods=["GET"]),
        ]

    # -- helpers --------------------------------------------------------------
    @staticmethod
    def _new_shape(request: Request) -> bool:
        return request.headers.get("x-supabase-api-version", "") >= API_VERSION

    def _fail(self, request: Request, status: int, code: str, msg: str,
              extra: dict[str, Any] | None = None) -> HTTPFailure:
        return gotrue(status, code, msg, new_shape=self._new_shape(request), extra=extra)

    def _ok(self, request: Request, body: Any, status: int = 200) -> JSONResponse:
        headers = {"X-Supabase-Api-Version": API_VERSION} if self._new_shape(request) else {}
        return JSONResponse(body, status_code=status, headers=headers)

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise self._fail(request, 400, "bad_json", "Could not parse request body as JSON")
        if not isinstance(body, dict):
            raise self._fail(request, 400, "bad_json", "Could not parse request body as JSON")
        return body

    def _claims(self, request: Request) -> dict[str, Any]:
        """Verify the Bearer JWT as GoTrue does (401 no token, 403 bad token)."""
        require_apikey(request, self.settings)
        token = bearer(request)
        if token is None:
            raise self._fail(request, 401, "no_authorization",
                             "This endpoint requires a valid Bearer token")
        try:
            return self.settings.verify(self.settings.legacy_key(token) or token)
        except jwt.JWTError as exc:
            raise self._fail(request, 403, "bad_jwt", "invalid JWT: unable to parse or verify "
                             f"signature, {_jwt_detail(exc)}") from exc

    async def _session_user(self, request: Request,
                            conn: store.Conn) -> tuple[dict[str, Any], dict[str, Any]]:
        claims = self._claims(request)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise self._fail(request, 403, "bad_jwt", "invalid claim: missing sub claim")
        try:
            user = await store.user_by_id(conn, sub)
        except psycopg.errors.InvalidTextRepresentation:
            user = None
        if user is None:
            raise self._fail(request, 403, "user_not_found",
                             "User from sub claim in JWT does not exist")
        sid = claims.get("session_id")
        if sid and await store.session(conn, str(sid)) is None:
            raise self._fail(request, 403, "session_not_found",
                             "Session from session_id claim in JWT does not exist")
        return claims, user

    def _admin(self, request: Request) -> None:
        claims = self._claims(request)
        if claims.get("role") not in ADMIN_ROLES:
            raise self._fail(request, 403, "not_admin", "User not allowed")

    async def _token_response(self, conn: store.Conn, user: dict[str, Any], session_id: str,
                              refresh_token: str) -> dict[str, Any]:
        sess = await store.session(conn, session_id)
        amr = sess["amr"] if sess else []
        now = int(self.settings.clock())
        exp = now + self.settings.jwt_exp
        claims = {
            "iss": f"{self.settings.url}/auth/v1", "sub": str(user["id"]), "aud": user["aud"],
            "exp": exp, "iat": now, "email": user["email"] or "", "phone": user["phone"] or "",
            "app_metadata": user["raw_app_meta_data"],
            "user_metadata": user["raw_user_meta_data"], "role": user["role"],
            "aal": sess["aal"] if sess else "aal1", "amr": amr, "session_id": session_id,
            "is_anonymous": user["is_anonymous"],
        }
        return {"access_token": self.settings.sign(claims),
                "token_type": "bearer", "expires_in": self.settings.jwt_exp, "expires_at": exp,
                "refresh_token": refresh_token, "user": user_json(user)}

    async def _new_session(self, conn: store.Conn, user: dict[str, Any],
                           method: str = "password") -> dict[str, Any]:
        uid = str(user["id"])
        sid = await store.create_session(conn, uid, [{"method": method,
                                                     "timestamp": int(self.settings.clock())}])
        token = await store.issue_refresh_token(conn, uid, sid)
        await store.touch_sign_in(conn, uid)
        fresh = await store.user_by_id(conn, uid)
        assert fresh is not None
        return await self._token_response(conn, fresh, sid, token)

    # -- endpoints ------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"version": "tablesync-devserver", "name": "GoTrue",
                             "description": "GoTrue-compatible auth of tablesync's devserver"})

    async def jwks(self, request: Request) -> Response:
        """GoTrue's public keys (no ``apikey`` needed, as on hosted projects)."""
        return JSONResponse(self.settings.jwks(),
                            headers={"Cache-Control": "public, max-age=600"})

    async def public_settings(self, request: Request) -> Response:
        require_apikey(request, self.settings)
        return JSONResponse({"external": {"email": True, "phone": False},
                             "disable_signup": False, "mailer_autoconfirm": True,
                             "phone_autoconfirm": False, "sms_provider": "",
                             "saml_enabled": False})

    async def token(self, request: Request) -> Response:
        require_apikey(request, self.settings)
        grant = request.query_params.get("grant_type", "")
        body = await self._body(request)
        if grant == "password":
            return await self._password_grant(request, body)
        if grant == "refresh_token":
            return await self._refresh_grant(request, body)
        raise self._fail(request, 400, "unsupported_grant_type", "unsupported_grant_type")

    async def _password_grant(self, request: Request, body: dict[str, Any]) -> Response:
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str) or not password:
            raise self._fail(request, 400, "invalid_credentials", "Invalid login credentials")
        async with self.pool.connection() as conn, conn.transaction():
            user = await store.user_by_email(conn, email)
            if user is None or not await verify_password(password, user["encrypted_password"]):
                raise self._fail(request, 400, "invalid_credentials", "Invalid login credentials")
            if user["banned"]:
                raise self._fail(request, 400, "user_banned", "User is banned")
            if user["email_confirmed_at"] is None:
                raise self._fail(request, 400, "email_not_confirmed", "Email not confirmed")
            resp = await self._new_session(conn, user)
        return self._ok(request, resp)

    async def _refresh_grant(self, request: Request, body: dict[str, Any]) -> Response:
        token = body.get("refresh_token")
        if not isinstance(token, str) or len(token) < store.TOKEN_LENGTH:
            raise self._fail(request, 400, "validation_failed", "Refresh token is not valid")
        # GoTrue (tokens/service.go) locks the token row without waiting and retries every
        # 10-30 ms; still locked after retryLoopDuration (5 s) -> 409 conflict.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.refresh_lock_timeout
        while True:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    outcome = await self._rotate(request, conn, token)
            if outcome is not LOCKED:
                break
            if loop.time() >= deadline:
                raise self._fail(request, 409, "conflict", REFRESH_CONFLICT)
            await asyncio.sleep(random.uniform(0.01, 0.03))
        if isinstance(outcome, HTTPFailure):
            raise outcome  # raised after commit: the family revocation must stick
        assert isinstance(outcome, dict)
        return self._ok(request, outcome)

    async def _rotate(self, request: Request, conn: store.Conn,
                      token: str) -> dict[str, Any] | HTTPFailure | object:
        """GoTrue's legacy rotation (``tokens/service.go`` RefreshTokenGrant); ``LOCKED``
        when another refresh holds the token's row."""
        row = await store.refresh_token_for_update(conn, token)
        if row is store.LOCKED:
            return LOCKED
        if not isinstance(row, dict):
            raise self._fail(request, 400, "refresh_token_not_found",
                             "Invalid Refresh Token: Refresh Token Not Found")
        sid = row["session_id"]
        if sid is None or await store.session(conn, sid) is None:
            raise self._fail(request, 400, "session_not_found",
                             "Invalid Refresh Token: No Valid Session Found")
        user = await store.user_by_id(conn, row["user_id"])
        if user is None:
            raise self._fail(request, 400, "refresh_token_not_found",
                             "Invalid Refresh Token: Refresh Token Not Found")
        if user["banned"]:
            raise self._fail(request, 400, "user_banned", "User is banned")
        issued: str | None = None
        if row["revoked"]:
            active = await store.active_refresh_token(conn, sid)
            age = self.settings.clock() - float(row["revoked_at"])
            in_window = age <= self.settings.refresh_reuse_interval
            if active is not None and active["parent"] == row["token"] and (
                    in_window or self.settings.parent_reuse_any_age):
                issued = active["token"]
            elif not in_window:
                await store.delete_sessions(conn, row["user_id"], only=sid)
                return self._fail(request, 400, "refresh_token_already_used",
                                  "Invalid Refresh Token: Already Used")
        if issued is None:
            await store.revoke(conn, row["id"], at=self.settings.clock())
            issued = await store.issue_refresh_token(conn, row["user_id"], sid, row["token"])
        return await self._token_response(conn, user, sid, issued)

    async def signup(self, request: Request) -> Response:
        require_apikey(request, self.settings)
        body = await self._body(request)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not email:
            raise self._fail(request, 400, "validation_failed", "To signup, please provide your email")
        if not _EMAIL.match(email):
            raise self._fail(request, 400, "validation_failed",
                             "Unable to validate email address: invalid format")
        self._check_password(request, password)
        data = body.get("data")
        meta: dict[str, Any] = data if isinstance(data, dict) else {}
        pw_hash = await hash_password(str(password))
        async with self.pool.connection() as conn, conn.transaction():
            if await store.user_by_email(conn, email) is not None:
                raise self._fail(request, 422, "user_already_exists", "User already registered")
            user = await store.create_user(
                conn, email=email, password_hash=pw_hash,
                app_meta={"provider": "email", "providers": ["email"]}, user_meta=meta,
                confirmed=True)
            resp = await self._new_session(conn, user)
        return self._ok(request, resp)

    def _check_password(self, request: Request, password: Any) -> None:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise self._fail(request, 422, "weak_password",
                             f"Password should be at least {MIN_PASSWORD} characters.",
                             extra={"weak_password": {"reasons": ["length"]}})

    async def get_user(self, request: Request) -> Response:
        async with self.pool.connection() as conn:
            _claims, user = await self._session_user(request, conn)
        return self._ok(request, user_json(user))

    async def put_user(self, request: Request) -> Response:
        body = await self._body(request)
        if "password" in body:
            self._check_password(request, body["password"])
        pw_hash = await _maybe_hash(body.get("password"))
        async with self.pool.connection() as conn, conn.transaction():
            _claims, user = await self._session_user(request, conn)
            data = body.get("data")
            row = await store.update_user(
                conn, str(user["id"]), user_meta=data if isinstance(data, dict) else None,
                password_hash=pw_hash)
        assert row is not None
        return self._ok(request, user_json(row))

    async def logout(self, request: Request) -> Response:
        scope = request.query_params.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise self._fail(request, 400, "validation_failed",
                             "Unsupported logout scope " + json.dumps(scope))
        async with self.pool.connection() as conn, conn.transaction():
            claims, user = await self._session_user(request, conn)
            sid = str(claims.get("session_id") or "") or None
            uid = str(user["id"])
            if scope == "global" or sid is None:
                await store.delete_sessions(conn, uid)
            elif scope == "local":
                await store.delete_sessions(conn, uid, only=sid)
            else:
                await store.delete_sessions(conn, uid, keep=sid)
        return Response(status_code=204)

    async def admin_create(self, request: Request) -> Response:
        self._admin(request)
        body = await self._body(request)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not email:
            raise self._fail(request, 400, "validation_failed",
                             "Cannot create a user without either an email or phone")
        if not _EMAIL.match(email):
            raise self._fail(request, 400, "validation_failed",
                             "Unable to validate email address: invalid format")
        if password is not None:
            self._check_password(request, password)
        app_meta = {"provider": "email", "providers": ["email"]}
        if isinstance(body.get("app_metadata"), dict):
            app_meta.update(body["app_metadata"])
        raw_meta = body.get("user_metadata")
        user_meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        pw_hash = await _maybe_hash(password)
        async with self.pool.connection() as conn, conn.transaction():
            if await store.user_by_email(conn, email) is not None:
                raise self._fail(request, 422, "email_exists",
                                 "A user with this email address has already been registered")
            user = await store.create_user(
                conn, email=email, password_hash=pw_hash,
                app_meta=app_meta, user_meta=user_meta, confirmed=bool(body.get("email_confirm")),
                role=str(body.get("role") or "authenticated"), user_id=body.get("id"))
        return self._ok(request, user_json(user))

    async def admin_list(self, request: Request) -> Response:
        self._admin(request)
        page = _positive(request.query_params.get("page"), 1)
        per_page = _positive(request.query_params.get("per_page"), 50)
        async with self.pool.connection() as conn:
            rows, total = await store.list_users(conn, limit=per_page,
                                                 offset=(page - 1) * per_page)
        resp = self._ok(request, {"users": [user_json(r) for r in rows], "aud": "authenticated"})
        resp.headers["x-total-count"] = str(total)
        return resp

    async def _admin_target(self, request: Request, conn: store.Conn) -> dict[str, Any]:
        uid = request.path_params["uid"]
        try:
            user = await store.user_by_id(conn, uid)
        except psycopg.errors.InvalidTextRepresentation:
            user = None
        if user is None:
            raise self._fail(request, 404, "user_not_found", "User not found")
        return user

    async def admin_get(self, request: Request) -> Response:
        self._admin(request)
        async with self.pool.connection() as conn:
            user = await self._admin_target(request, conn)
        return self._ok(request, user_json(user))

    async def admin_update(self, request: Request) -> Response:
        self._admin(request)
        body = await self._body(request)
        if body.get("password") is not None:
            self._check_password(request, body["password"])
        ban = body.get("ban_duration")
        ban_seconds = None if ban is None else (0 if ban == "none" else _duration(ban))
        pw_hash = await _maybe_hash(body.get("password"))
        async with self.pool.connection() as conn, conn.transaction():
            user = await self._admin_target(request, conn)
            row = await store.update_user(
                conn, str(user["id"]),
                app_meta=body["app_metadata"] if isinstance(body.get("app_metadata"), dict) else None,
                user_meta=body["user_metadata"] if isinstance(body.get("user_metadata"), dict) else None,
                password_hash=pw_hash, confirm=bool(body.get("email_confirm")), email=body.get("email"),
                banned_seconds=ban_seconds)
        assert row is not None
        return self._ok(request, user_json(row))

    async def admin_delete(self, request: Request) -> Response:
        self._admin(request)
        async with self.pool.connection() as conn, conn.transaction():
            user = await self._admin_target(request, conn)
            await store.delete_user(conn, str(user["id"]))
        return self._ok(request, {})


def _positive(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def _duration(text: Any) -> int:
    """``"24h"``, ``"30m"``, ``"10s"`` (Go durations, the common units) -> seconds."""
    match = re.fullmatch(r"(\d+)(h|m|s)", str(text))
    if not match:
        return 0
    return int(match.group(1)) * {"h": 3600, "m": 60, "s": 1}[match.group(2)]
