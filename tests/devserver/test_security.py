"""Security: forged/expired JWTs refused everywhere, cross-system isolation, no SQL injection."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync.devserver import jwt
from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import run_sql, service_headers, user_headers, user_token

pytestmark = pytest.mark.postgres


def _unsigned(claims: dict[str, object]) -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


def _bad_tokens(secret: str) -> dict[str, str]:
    claims = {"sub": "00000000-0000-0000-0000-000000000000", "role": "service_role"}
    return {
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 10}, secret),
        "wrong-secret": jwt.encode({**claims, "exp": int(time.time()) + 600}, "guessed"),
        "unsigned": _unsigned({**claims, "exp": int(time.time()) + 600}),
        "garbage": "not-a-jwt",
    }


SURFACES = [
    ("GET", "/rest/v1/items", None),
    ("POST", "/rest/v1/items", {"id": 1, "system_id": "A"}),
    ("PATCH", "/rest/v1/items?id=eq.1", {"title": "x"}),
    ("DELETE", "/rest/v1/items?id=eq.1", None),
    ("POST", "/rest/v1/rpc/add", {"a": 1, "b": 2}),
    ("GET", "/auth/v1/user", None),
    ("POST", "/auth/v1/logout", None),
    ("POST", "/auth/v1/admin/users", {"email": "x@example.com"}),
    ("DELETE", "/_devserver/faults", None),
]


def test_bad_jwts_are_refused_on_every_surface(http: httpx.Client, server: DevServer,
                                               info: DevServerInfo, items: str) -> None:
    assert server.settings is not None
    for kind, token in _bad_tokens(server.settings.jwt_secret).items():
        for method, path, body in SURFACES:
            resp = http.request(method, path, json=body,
                                headers={"apikey": info.anon_key, "Authorization": f"Bearer {token}"})
            assert resp.status_code in (401, 403), (kind, method, path, resp.text)
            if path.startswith("/rest/"):
                expected = "PGRST303" if kind == "expired" else "PGRST301"
                assert resp.status_code == 401 and resp.json()["code"] == expected
    assert run_sql(info.dsn, "SELECT count(*) FROM items") == [(0,)]


def test_a_forged_key_as_apikey_is_refused_by_the_gateway(http: httpx.Client, server: DevServer,
                                                          items: str) -> None:
    assert server.settings is not None
    for token in _bad_tokens(server.settings.jwt_secret).values():
        resp = http.get("/rest/v1/items", headers={"apikey": token})
        assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"


def test_a_signed_token_cannot_claim_a_role_outside_the_api_roles(
        http: httpx.Client, server: DevServer, info: DevServerInfo, items: str) -> None:
    assert server.settings is not None
    token = jwt.encode({"role": "postgres", "exp": int(time.time()) + 60},
                       server.settings.jwt_secret)
    resp = http.get("/rest/v1/items", headers=user_headers(info, token))
    assert resp.status_code in (401, 403)
    assert resp.json()["code"] in ("42501", "22023")


def test_system_a_cannot_read_or_write_system_b_rows(http: httpx.Client, info: DevServerInfo,
                                                     items: str) -> None:
    run_sql(info.dsn, "INSERT INTO items (id, system_id, title) VALUES (1, 'A', 'a'), (2, 'B', 'b')")
    a = user_headers(info, user_token(http, info, "a@example.com", "A"))
    assert http.get("/rest/v1/items?select=id", headers=a).json() == [{"id": 1}]
    assert http.get("/rest/v1/items?select=id&system_id=eq.B", headers=a).json() == []
    assert http.post("/rest/v1/rpc/visible_items", headers=a).json()[0]["id"] == 1
    resp = http.patch("/rest/v1/items?id=eq.2", headers={**a, "Prefer": "return=representation"},
                      json={"title": "hacked"})
    assert resp.status_code == 200 and resp.json() == []
    resp = http.patch("/rest/v1/items?id=eq.1", headers=a, json={"system_id": "B"})
    assert resp.status_code == 403 and resp.json()["code"] == "42501"
    resp = http.delete("/rest/v1/items?id=eq.2", headers=a)
    assert resp.status_code == 204
    resp = http.post("/rest/v1/items", headers={**a, "Prefer": "resolution=merge-duplicates"},
                     json={"id": 2, "system_id": "B", "title": "hacked"})
    assert resp.status_code == 403
    resp = http.post("/rest/v1/items", headers={**a, "Prefer": "resolution=merge-duplicates"},
                     json={"id": 2, "system_id": "A", "title": "hacked"})
    assert resp.status_code == 403
    assert run_sql(info.dsn, "SELECT id, system_id, title FROM items ORDER BY id") == \
        [(1, "A", "a"), (2, "B", "b")]


def test_auth_tables_are_not_reachable_through_rest(http: httpx.Client, info: DevServerInfo,
                                                    items: str) -> None:
    a = user_headers(info, user_token(http, info, "a@example.com", "A"))
    for path in ("/rest/v1/auth.users", "/rest/v1/users", "/rest/v1/refresh_tokens"):
        assert http.get(path, headers=a).status_code == 404


def test_odd_identifiers_are_quoted_not_pasted(http: httpx.Client, info: DevServerInfo) -> None:
    run_sql(info.dsn, """CREATE TABLE "we""ird; tbl" (id int PRIMARY KEY, "co'l; -- x" text)""")
    h = service_headers(info)
    table = quote('we"ird; tbl', safe="")
    col = "co'l; -- x"
    resp = http.post(f"/rest/v1/{table}", headers={**h, "Prefer": "return=representation"},
                     json={"id": 1, col: "v"})
    assert resp.status_code == 201, resp.text
    resp = http.get(f"/rest/v1/{table}", params={"select": col, col: "eq.v", "order": col},
                    headers=h)
    assert resp.status_code == 200 and resp.json() == [{col: "v"}]


ALLOWED_CODES = {"PGRST100", "PGRST125", "PGRST102", "PGRST204", "PGRST205", "42703", "22P02", "22007",
                 "22008", "42883", "22023", "2201B", "42725", "42846", "22021", "42804", "21000"}


def _check_refusal(resp: httpx.Response) -> None:
    """A fuzzed request either works or is refused with a known, non-syntax error."""
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        code = resp.json().get("code")
        assert code != "42601", resp.text  # a syntax error would mean text reached SQL raw
        assert code in ALLOWED_CODES, resp.text


_NASTY = ['items"; DROP TABLE items; --', "title) OR (1=1", "id = id; --", 'x" FROM pg_roles --',
          "title::text; select 1", "*,pg_sleep(1)", "(select 1)", "items; truncate items"]
_names = st.one_of(st.sampled_from(_NASTY),
                   st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                           min_size=1, max_size=24))
_ops = st.sampled_from(["eq", "neq", "gt", "lt", "in", "is", "like", "not.eq", "gte", "lte"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(table=st.one_of(st.just("items"), _names), column=st.one_of(st.just("title"), _names),
       op=_ops, value=_names, select=st.one_of(st.just("*"), _names),
       order=st.one_of(st.just("id"), _names))
def test_fuzzed_identifiers_never_inject_sql(http: httpx.Client, info: DevServerInfo, items: str,
                                             table: str, column: str, op: str, value: str,
                                             select: str, order: str) -> None:
    h = service_headers(info)
    path = f"/rest/v1/{quote(table, safe='')}"
    params = {"select": select, column: f"{op}.{value}", "order": order}
    _check_refusal(http.get(path, params=params, headers=h))
    _check_refusal(http.patch(path, params={column: f"{op}.{value}"}, json={column: value},
                              headers=h))
    assert run_sql(info.dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'items'") == [(1,)]


def test_unroutable_path_answers_json_404(http: httpx.Client, info: DevServerInfo) -> None:
    """A newline in a table name cannot match any route: still PostgREST's JSON error."""
    resp = http.get("/rest/v1/%2F%0A0", headers={"apikey": info.anon_key})
    assert resp.status_code == 404
    assert resp.json()["code"] == "PGRST125"
