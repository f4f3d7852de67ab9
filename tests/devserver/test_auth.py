"""Auth (/auth/v1) over raw HTTP: grants, claims, rotation, error shapes."""

from __future__ import annotations

import time

import httpx
import pytest

from tablesync.clock import ManualClock
from tablesync.devserver import jwt
from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import anon_headers, create_user, service_headers, sign_in, user_headers

pytestmark = pytest.mark.postgres
NEW = {"X-Supabase-Api-Version": "2024-01-01"}


def test_admin_create_then_password_grant_claims(http: httpx.Client, server: DevServer,
                                                 info: DevServerInfo) -> None:
    user = create_user(http, info, "a@example.com", "sys-a")
    assert user["app_metadata"] == {"provider": "email", "providers": ["email"],
                                    "system_id": "sys-a"}
    tok = sign_in(http, info, "a@example.com")
    assert tok["token_type"] == "bearer" and tok["expires_in"] == 3600
    assert abs(tok["expires_at"] - (time.time() + 3600)) < 5
    assert len(tok["refresh_token"]) == 12
    assert tok["user"]["id"] == user["id"]
    assert server.settings is not None
    claims = jwt.decode(tok["access_token"], server.settings.jwt_secret)
    assert claims["aud"] == "authenticated" and claims["role"] == "authenticated"
    assert claims["sub"] == user["id"] and claims["email"] == "a@example.com"
    assert claims["phone"] == "" and claims["is_anonymous"] is False
    assert claims["aal"] == "aal1" and claims["amr"][0]["method"] == "password"
    assert claims["app_metadata"]["system_id"] == "sys-a"
    assert claims["exp"] - claims["iat"] == 3600 and claims["session_id"]
    assert claims["iss"] == f"{info.url}/auth/v1"


def test_signup_returns_session_and_user_endpoint(http: httpx.Client,
                                                  info: DevServerInfo) -> None:
    resp = http.post("/auth/v1/signup", headers=anon_headers(info),
                     json={"email": "s@example.com", "password": "hunter22",
                           "data": {"name": "S"}})
    assert resp.status_code == 200
    tok = resp.json()
    assert tok["user"]["user_metadata"] == {"name": "S"}
    me = http.get("/auth/v1/user", headers=user_headers(info, tok["access_token"]))
    assert me.status_code == 200 and me.json()["email"] == "s@example.com"
    again = http.post("/auth/v1/signup", headers=anon_headers(info),
                      json={"email": "s@example.com", "password": "hunter22"})
    assert again.status_code == 422
    assert again.json() == {"code": 422, "error_code": "user_already_exists",
                            "msg": "User already registered"}
    weak = http.post("/auth/v1/signup", headers={**anon_headers(info), **NEW},
                     json={"email": "w@example.com", "password": "123"})
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"


def test_error_shapes_follow_api_version_header(http: httpx.Client, info: DevServerInfo) -> None:
    create_user(http, info, "e@example.com", None)
    body = {"email": "e@example.com", "password": "wrong-password"}
    old = http.post("/auth/v1/token?grant_type=password", headers=anon_headers(info), json=body)
    assert old.status_code == 400
    assert old.json() == {"code": 400, "error_code": "invalid_credentials",
                          "msg": "Invalid login credentials"}
    assert old.headers["x-sb-error-code"] == "invalid_credentials"
    new = http.post("/auth/v1/token?grant_type=password", headers={**anon_headers(info), **NEW},
                    json=body)
    assert new.json() == {"code": "invalid_credentials", "message": "Invalid login credentials"}
    assert new.headers["x-supabase-api-version"] == "2024-01-01"
    resp = http.post("/auth/v1/token?grant_type=magic", headers=anon_headers(info), json={})
    assert resp.status_code == 400 and resp.json()["error_code"] == "unsupported_grant_type"


def test_unconfirmed_email_cannot_sign_in(http: httpx.Client, info: DevServerInfo) -> None:
    resp = http.post("/auth/v1/admin/users", headers=service_headers(info),
                     json={"email": "u@example.com", "password": "secret-pass-1"})
    assert resp.status_code == 200 and "email_confirmed_at" not in resp.json()
    resp = http.post("/auth/v1/token?grant_type=password", headers=anon_headers(info),
                     json={"email": "u@example.com", "password": "secret-pass-1"})
    assert resp.status_code == 400 and resp.json()["error_code"] == "email_not_confirmed"


def test_admin_endpoints_need_the_service_role(http: httpx.Client, info: DevServerInfo) -> None:
    resp = http.post("/auth/v1/admin/users", headers=anon_headers(info),
                     json={"email": "x@example.com"})
    assert resp.status_code == 403 and resp.json()["error_code"] == "not_admin"
    resp = http.post("/auth/v1/admin/users", headers={"apikey": info.anon_key},
                     json={"email": "x@example.com"})
    assert resp.status_code == 401 and resp.json()["error_code"] == "no_authorization"


def test_admin_update_merges_app_metadata_into_next_tokens(http: httpx.Client, server: DevServer,
                                                           info: DevServerInfo) -> None:
    user = create_user(http, info, "m@example.com", "one")
    tok = sign_in(http, info, "m@example.com")
    resp = http.put(f"/auth/v1/admin/users/{user['id']}", headers=service_headers(info),
                    json={"app_metadata": {"system_id": "two", "extra": 1}})
    assert resp.status_code == 200 and resp.json()["app_metadata"]["system_id"] == "two"
    new = http.post("/auth/v1/token?grant_type=refresh_token", headers=anon_headers(info),
                    json={"refresh_token": tok["refresh_token"]}).json()
    assert server.settings is not None
    claims = jwt.decode(new["access_token"], server.settings.jwt_secret)
    assert claims["app_metadata"]["system_id"] == "two" and claims["app_metadata"]["extra"] == 1


def _refresh(http: httpx.Client, info: DevServerInfo, token: str) -> httpx.Response:
    return http.post("/auth/v1/token?grant_type=refresh_token", headers=anon_headers(info),
                     json={"refresh_token": token})


def test_refresh_rotates_and_parent_reuse_returns_active_token(http: httpx.Client,
                                                                info: DevServerInfo) -> None:
    create_user(http, info, "r@example.com", "s")
    first = sign_in(http, info, "r@example.com")["refresh_token"]
    second = _refresh(http, info, first).json()["refresh_token"]
    assert second != first
    again = _refresh(http, info, first)  # client lost the answer and retries
    assert again.status_code == 200 and again.json()["refresh_token"] == second
    third = _refresh(http, info, second).json()["refresh_token"]
    assert third not in (first, second)


def test_refresh_reuse_outside_interval_revokes_the_session(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, refresh_reuse_interval=0, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "z@example.com", "s")
            tok = sign_in(http, info, "z@example.com")
            first = tok["refresh_token"]
            second = _refresh(http, info, first).json()["refresh_token"]
            third = _refresh(http, info, second).json()["refresh_token"]
            clock.advance(1.1)
            reuse = _refresh(http, info, first)  # grandparent: not the active one's parent
            assert reuse.status_code == 400
            assert reuse.json()["error_code"] == "refresh_token_already_used"
            assert reuse.json()["msg"] == "Invalid Refresh Token: Already Used"
            dead = _refresh(http, info, third)
            assert dead.status_code == 400
            assert dead.json()["error_code"] == "refresh_token_not_found"
            me = http.get("/auth/v1/user", headers=user_headers(info, tok["access_token"]))
            assert me.status_code == 403 and me.json()["error_code"] == "session_not_found"
    finally:
        srv.stop()


def test_refresh_reuse_inside_interval_is_allowed(http: httpx.Client, info: DevServerInfo) -> None:
    create_user(http, info, "i@example.com", "s")
    first = sign_in(http, info, "i@example.com")["refresh_token"]
    second = _refresh(http, info, first).json()["refresh_token"]
    _refresh(http, info, second)
    resp = _refresh(http, info, first)  # within 10 s of its revocation
    assert resp.status_code == 200


def test_bad_refresh_tokens(http: httpx.Client, info: DevServerInfo) -> None:
    resp = _refresh(http, info, "short")
    assert resp.status_code == 400 and resp.json()["error_code"] == "validation_failed"
    resp = _refresh(http, info, "abcdefghijkl")
    assert resp.status_code == 400 and resp.json()["error_code"] == "refresh_token_not_found"
    assert resp.json()["msg"] == "Invalid Refresh Token: Refresh Token Not Found"


def test_logout_kills_the_session(http: httpx.Client, info: DevServerInfo) -> None:
    create_user(http, info, "l@example.com", "s")
    tok = sign_in(http, info, "l@example.com")
    resp = http.post("/auth/v1/logout", headers=user_headers(info, tok["access_token"]))
    assert resp.status_code == 204 and resp.text == ""
    resp = _refresh(http, info, tok["refresh_token"])
    assert resp.status_code == 400
    resp = http.get("/auth/v1/user", headers=user_headers(info, tok["access_token"]))
    assert resp.status_code == 403


def test_user_endpoint_refuses_missing_expired_and_forged_tokens(
        http: httpx.Client, server: DevServer, info: DevServerInfo) -> None:
    resp = http.get("/auth/v1/user", headers={"apikey": info.anon_key})
    assert resp.status_code == 401 and resp.json()["error_code"] == "no_authorization"
    assert server.settings is not None
    user = create_user(http, info, "x@example.com", "s")
    expired = jwt.encode({"sub": user["id"], "role": "authenticated", "exp": int(time.time()) - 5},
                         server.settings.jwt_secret)
    resp = http.get("/auth/v1/user", headers=user_headers(info, expired))
    assert resp.status_code == 403 and resp.json()["error_code"] == "bad_jwt"
    assert resp.json()["msg"].endswith("token has invalid claims: token is expired")
    forged = jwt.encode({"sub": user["id"], "role": "authenticated"}, "not-the-secret")
    resp = http.get("/auth/v1/user", headers=user_headers(info, forged))
    assert resp.status_code == 403 and resp.json()["error_code"] == "bad_jwt"


def test_short_token_lifetime_is_configurable(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, jwt_exp=1, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "t@example.com", "s")
            tok = sign_in(http, info, "t@example.com")
            assert tok["expires_in"] == 1
            resp = http.get("/rest/v1/", headers=user_headers(info, tok["access_token"]))
            assert resp.status_code == 200               # the clock stood still: still valid
            clock.advance(1.0)                           # exp <= now: expired (PyJWT's rule)
            resp = http.get("/rest/v1/", headers=user_headers(info, tok["access_token"]))
            assert resp.status_code == 401
            assert resp.json() == {"code": "PGRST303", "details": None, "hint": None,
                                   "message": "JWT expired"}
            assert 'error_description="JWT expired"' in resp.headers["www-authenticate"]
    finally:
        srv.stop()


def test_user_can_update_own_metadata_and_password(http: httpx.Client,
                                                   info: DevServerInfo) -> None:
    create_user(http, info, "p@example.com", "s")
    tok = sign_in(http, info, "p@example.com")
    resp = http.put("/auth/v1/user", headers=user_headers(info, tok["access_token"]),
                    json={"data": {"theme": "dark"}, "password": "new-secret-9"})
    assert resp.status_code == 200 and resp.json()["user_metadata"] == {"theme": "dark"}
    assert sign_in(http, info, "p@example.com", "new-secret-9")["access_token"]
    resp = http.post("/auth/v1/token?grant_type=password", headers=anon_headers(info),
                     json={"email": "p@example.com", "password": "secret-pass-1"})
    assert resp.status_code == 400


def test_concurrent_refreshes_with_one_token_agree(http: httpx.Client, info: DevServerInfo) -> None:
    from concurrent.futures import ThreadPoolExecutor

    create_user(http, info, "cc@example.com", "s")
    token = sign_in(http, info, "cc@example.com")["refresh_token"]

    def refresh(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=info.url, timeout=30) as client:
            resp = _refresh(client, info, token)
            return resp.status_code, resp.json().get("refresh_token", "")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(refresh, range(4)))
    assert {code for code, _ in results} == {200}
    assert len({tok for _, tok in results}) == 1  # everyone got the one active token


def test_stricter_parent_rule_revokes_a_late_parent_reuse(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, refresh_reuse_interval=0,
                    parent_reuse_any_age=False, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "late@example.com", "s")
            first = sign_in(http, info, "late@example.com")["refresh_token"]
            second = _refresh(http, info, first).json()["refresh_token"]
            clock.advance(1.1)
            late = _refresh(http, info, first)
            assert late.status_code == 400
            assert late.json()["error_code"] == "refresh_token_already_used"
            assert _refresh(http, info, second).status_code == 400
    finally:
        srv.stop()


def test_gotrue_parent_rule_returns_the_active_token_at_any_age(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, refresh_reuse_interval=0, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "old@example.com", "s")
            first = sign_in(http, info, "old@example.com")["refresh_token"]
            second = _refresh(http, info, first).json()["refresh_token"]
            clock.advance(3600)
            again = _refresh(http, info, first)
            assert again.status_code == 200 and again.json()["refresh_token"] == second
    finally:
        srv.stop()


def test_reuse_window_is_measured_on_the_devserver_clock(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, refresh_reuse_interval=10,
                    parent_reuse_any_age=False, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "win@example.com", "s")
            first = sign_in(http, info, "win@example.com")["refresh_token"]
            second = _refresh(http, info, first).json()["refresh_token"]
            third = _refresh(http, info, second).json()["refresh_token"]
            clock.advance(9.5)                   # second was revoked 9.5 s ago: inside
            inside = _refresh(http, info, second)
            assert inside.status_code == 200 and inside.json()["refresh_token"] == third
            clock.advance(1.0)                   # 10.5 s: outside, the session is revoked
            outside = _refresh(http, info, second)
            assert outside.status_code == 400
            assert outside.json()["error_code"] == "refresh_token_already_used"
    finally:
        srv.stop()


def test_every_exp_check_reads_the_devserver_clock(pg_dsn: str) -> None:
    clock = ManualClock()
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, clock=clock)
    info = srv.start()
    try:
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "clk@example.com", "s")
            tok = sign_in(http, info, "clk@example.com")
            assert tok["expires_at"] == int(clock()) + 3600
            assert server_claims(srv, tok["access_token"])["iat"] == int(clock())
            headers = user_headers(info, tok["access_token"])
            assert http.get("/rest/v1/", headers=headers).status_code == 200
            assert http.get("/auth/v1/user", headers=headers).status_code == 200
            clock.advance(3599)
            assert http.get("/rest/v1/", headers=headers).status_code == 200
            clock.advance(1)                     # now == exp: expired
            resp = http.get("/rest/v1/", headers=headers)
            assert resp.status_code == 401 and resp.json()["code"] == "PGRST303"
            resp = http.get("/auth/v1/user", headers=headers)
            assert resp.status_code == 403
            assert resp.json()["msg"].endswith("token has invalid claims: token is expired")
            fresh = _refresh(http, info, tok["refresh_token"]).json()
            assert fresh["expires_at"] == int(clock()) + 3600
            assert http.get("/rest/v1/", headers=user_headers(
                info, fresh["access_token"])).status_code == 200
    finally:
        srv.stop()


def server_claims(srv: DevServer, token: str) -> dict[str, object]:
    assert srv.settings is not None
    return jwt.decode(token, srv.settings.jwt_secret, now=srv.clock())
