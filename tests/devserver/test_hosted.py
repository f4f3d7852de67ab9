"""Hosted-Supabase behaviours, each behind a DevServer keyword / CLI flag (issue 14 item 1).

max_rows, per-role statement timeouts, TOAST omission in Realtime UPDATEs, the Realtime rate
limit, capture restarts, 409 on contended refreshes, private-only channels, new-style API
keys and the asymmetric signing key with its JWKS.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Iterator

import httpx
import jwt as pyjwt
import psycopg
import pytest
import websockets

from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import (ITEMS_SQL, anon_headers, create_user, run_sql, service_headers,
                      sign_in, user_headers)
from .realtime_harness import Phoenix

pytestmark = pytest.mark.postgres


@pytest.fixture
def make(pg_dsn: str) -> Iterator[Any]:
    """Start a devserver on the test database with the given keywords (stopped after)."""
    started: list[DevServer] = []

    def start(**kw: Any) -> tuple[DevServer, DevServerInfo]:
        kw.setdefault("auto_realtime", False)
        srv = DevServer(dsn=pg_dsn, **kw)
        started.append(srv)
        return srv, srv.start()

    yield start
    for srv in started:
        srv.stop()


# -- max_rows ---------------------------------------------------------------------------

def test_max_rows_cuts_table_reads_and_set_returning_rpcs(make: Any) -> None:
    _, info = make(max_rows=3)
    run_sql(info.dsn, ITEMS_SQL + "INSERT INTO items (id, system_id) "
            "SELECT g, 'A' FROM generate_series(1, 7) g;")
    with httpx.Client(base_url=info.url, headers=service_headers(info)) as http:
        for path in ("/rest/v1/items?select=id&order=id", "/rest/v1/items?limit=50&order=id",
                     "/rest/v1/rpc/visible_items", "/rest/v1/rpc/item_ids"):
            resp = http.get(path)
            assert resp.status_code == 200, (path, resp.text)
            assert len(resp.json()) == 3, path
            assert resp.headers["content-range"] == "0-2/*", path
        post = http.post("/rest/v1/rpc/item_ids", json={})
        assert post.json() == [1, 2, 3]
        page = http.get("/rest/v1/items?select=id&order=id&offset=5")
        assert [r["id"] for r in page.json()] == [6, 7]
        counted = http.get("/rest/v1/items?select=id", headers={"Prefer": "count=exact"})
        assert counted.status_code == 206 and counted.headers["content-range"] == "0-2/7"


# -- statement timeouts -----------------------------------------------------------------

SLOW_SQL = """
CREATE FUNCTION public.slow(secs double precision) RETURNS integer
  LANGUAGE sql VOLATILE AS 'SELECT 1 FROM pg_sleep(secs)';
"""


def test_statement_timeout_cancels_slow_authenticated_statements(make: Any) -> None:
    _, info = make(statement_timeout=0.5, anon_statement_timeout=0.3)
    run_sql(info.dsn, ITEMS_SQL + SLOW_SQL)
    with httpx.Client(base_url=info.url, timeout=10) as http:
        create_user(http, info, "slow@example.com", "A")
        tok = sign_in(http, info, "slow@example.com")["access_token"]
        started = time.monotonic()
        resp = http.post("/rest/v1/rpc/slow", headers=user_headers(info, tok),
                         json={"secs": 3})
        assert time.monotonic() - started < 2.5
        assert resp.status_code == 500
        assert resp.json() == {"code": "57014", "details": None, "hint": None,
                               "message": "canceling statement due to statement timeout"}
        fast = http.post("/rest/v1/rpc/slow", headers=user_headers(info, tok),
                         json={"secs": 0.1})
        assert fast.status_code == 200 and fast.json() == 1
        anon = http.get("/rest/v1/rpc/slow?secs=1", headers=anon_headers(info))
        assert anon.status_code == 500 and anon.json()["code"] == "57014"
        # service_role has no timeout (as hosted); the session setting is not leaked
        svc = http.post("/rest/v1/rpc/slow", headers=service_headers(info), json={"secs": 0.8})
        assert svc.status_code == 200, svc.text


def test_statement_timeout_zero_disables_it(make: Any) -> None:
    _, info = make(statement_timeout=0)
    run_sql(info.dsn, SLOW_SQL)
    with httpx.Client(base_url=info.url, timeout=10) as http:
        create_user(http, info, "z@example.com", "A")
        tok = sign_in(http, info, "z@example.com")["access_token"]
        resp = http.post("/rest/v1/rpc/slow", headers=user_headers(info, tok),
                         json={"secs": 0.6})
        assert resp.status_code == 200


# -- new API keys and the asymmetric signing key -----------------------------------------

def test_new_api_keys_map_to_anon_and_service_role(make: Any) -> None:
    _, info = make()
    assert info.publishable_key.startswith("sb_publishable_")
    assert info.secret_key.startswith("sb_secret_")
    run_sql(info.dsn, ITEMS_SQL + "INSERT INTO items (id, system_id) VALUES (1, 'A');")
    with httpx.Client(base_url=info.url) as http:
        pub = {"apikey": info.publishable_key}
        sec = {"apikey": info.secret_key}
        assert http.get("/rest/v1/rpc/whoami", headers=pub).json()["role"] == "anon"
        assert http.get("/rest/v1/rpc/whoami", headers=sec).json()["role"] == "service_role"
        bearer = {**sec, "Authorization": f"Bearer {info.secret_key}"}
        assert http.get("/rest/v1/items", headers=bearer).json()[0]["id"] == 1
        assert http.get("/rest/v1/items", headers=pub).json() == []  # RLS: anon sees none
        resp = http.post("/auth/v1/admin/users", headers=bearer,
                         json={"email": "k@example.com", "password": "secret-pass-1",
                               "email_confirm": True})
        assert resp.status_code == 200, resp.text
        tok = http.post("/auth/v1/token?grant_type=password", headers=pub,
                        json={"email": "k@example.com", "password": "secret-pass-1"})
        assert tok.status_code == 200
        wrong = http.get("/rest/v1/items", headers={"apikey": "sb_secret_" + "0" * 32})
        assert wrong.status_code == 401 and wrong.json()["message"] == "Invalid API key"


def test_asymmetric_signing_key_jwks_and_verification(make: Any) -> None:
    srv, info = make(jwt_signing="asymmetric")
    run_sql(info.dsn, ITEMS_SQL)
    with httpx.Client(base_url=info.url) as http:
        jwks = http.get("/auth/v1/.well-known/jwks.json").json()
        assert [k["alg"] for k in jwks["keys"]] == ["ES256"]
        create_user(http, info, "es@example.com", "A")
        tok = sign_in(http, info, "es@example.com")["access_token"]
        header = pyjwt.get_unverified_header(tok)
        assert header["alg"] == "ES256" and header["kid"] == jwks["keys"][0]["kid"]
        key = pyjwt.PyJWK(jwks["keys"][0])
        claims = pyjwt.decode(tok, key.key, algorithms=["ES256"], audience="authenticated")
        assert claims["email"] == "es@example.com"
        who = http.get("/rest/v1/rpc/whoami", headers=user_headers(info, tok)).json()
        assert who["role"] == "authenticated" and who["email"] == "es@example.com"
        assert http.get("/auth/v1/user", headers=user_headers(info, tok)).status_code == 200
        # legacy HS256 keys keep working beside the signing key
        assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 200
        # a token signed by another ES256 key is refused
        other = pyjwt.encode({**claims, "exp": int(time.time()) + 60},
                             _other_ec_key(), algorithm="ES256", headers={"kid": header["kid"]})
        bad = http.get("/rest/v1/items", headers=user_headers(info, other))
        assert bad.status_code == 401 and bad.json()["code"] == "PGRST301"


def test_hs256_signing_publishes_no_keys(make: Any) -> None:
    _, info = make()
    with httpx.Client(base_url=info.url) as http:
        assert http.get("/auth/v1/.well-known/jwks.json").json() == {"keys": []}


def test_signing_key_persists_in_the_data_dir(tmp_path: Any) -> None:
    kids = []
    for _ in range(2):
        srv = DevServer(data_dir=tmp_path / "d", jwt_signing="asymmetric", auto_realtime=False)
        info = srv.start()
        try:
            kids.append(httpx.get(f"{info.url}/auth/v1/.well-known/jwks.json")
                        .json()["keys"][0]["kid"])
        finally:
            srv.cleanup()
    assert kids[0] == kids[1]
    assert oct((tmp_path / "d" / "jwt_signing_key.pem").stat().st_mode & 0o777) == "0o600"


def _other_ec_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


# -- 409 on contended refresh ------------------------------------------------------------

def test_refresh_answers_409_conflict_while_the_token_is_locked(make: Any) -> None:
    _, info = make(refresh_lock_timeout=0.5)
    with httpx.Client(base_url=info.url, timeout=10) as http:
        create_user(http, info, "c@example.com", None)
        refresh = sign_in(http, info, "c@example.com")["refresh_token"]
        with psycopg.connect(info.dsn) as holder:  # a concurrent refresh holding the row
            holder.execute("SELECT 1 FROM auth.refresh_tokens WHERE token = %s FOR UPDATE",
                           (refresh,))
            started = time.monotonic()
            resp = http.post("/auth/v1/token?grant_type=refresh_token",
                             headers=anon_headers(info), json={"refresh_token": refresh})
            assert 0.4 < time.monotonic() - started < 3
            holder.rollback()
        assert resp.status_code == 409
        assert resp.json() == {"code": 409, "error_code": "conflict",
                               "msg": "Too many concurrent token refresh requests on the same "
                                      "session or refresh token"}
        assert resp.headers["x-sb-error-code"] == "conflict"
        ok = http.post("/auth/v1/token?grant_type=refresh_token", headers=anon_headers(info),
                       json={"refresh_token": refresh})
        assert ok.status_code == 200  # the token was not used up by the conflict


def test_refresh_waits_for_a_short_lock_then_succeeds(make: Any) -> None:
    _, info = make()
    with httpx.Client(base_url=info.url, timeout=10) as http:
        create_user(http, info, "w@example.com", None)
        refresh = sign_in(http, info, "w@example.com")["refresh_token"]
        holder = psycopg.connect(info.dsn)
        holder.execute("SELECT 1 FROM auth.refresh_tokens WHERE token = %s FOR UPDATE",
                       (refresh,))
        release = threading.Timer(0.4, holder.rollback)
        release.start()
        try:
            resp = http.post("/auth/v1/token?grant_type=refresh_token",
                             headers=anon_headers(info), json={"refresh_token": refresh})
        finally:
            release.join()
            holder.close()
        assert resp.status_code == 200, resp.text


def test_409_fault_has_gotrue_shape(make: Any) -> None:
    srv, info = make(enable_faults=True)
    srv.faults.add("auth", 409, path_prefix="/auth/v1/token")
    with httpx.Client(base_url=info.url) as http:
        resp = http.post("/auth/v1/token?grant_type=refresh_token", headers=anon_headers(info),
                         json={"refresh_token": "x" * 12})
    assert resp.status_code == 409
    assert resp.json()["error_code"] == "conflict"


# -- Realtime ----------------------------------------------------------------------------

RT_SQL = ITEMS_SQL + """
ALTER TABLE public.items ADD COLUMN body text;
ALTER PUBLICATION supabase_realtime ADD TABLE public.items;
"""
CHANGES_A = [{"event": "*", "schema": "public", "table": "items", "filter": "system_id=eq.A"}]


@pytest.fixture
def rt(make: Any) -> Any:
    """Start a devserver with Realtime; returns (server, info, user token of system A)."""
    def start(**kw: Any) -> tuple[DevServer, DevServerInfo, str]:
        srv, info = make(auto_realtime=True, **kw)
        run_sql(info.dsn, RT_SQL)
        with httpx.Client(base_url=info.url) as http:
            create_user(http, info, "rt@example.com", "A")
            tok = sign_in(http, info, "rt@example.com")["access_token"]
        return srv, info, tok
    return start


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _connect(info: DevServerInfo, apikey: str | None = None) -> tuple[Any, Phoenix]:
    host = info.url.removeprefix("http://")
    ws = await websockets.connect(f"ws://{host}/realtime/v1/websocket?apikey="
                                  f"{apikey or info.anon_key}&vsn=1.0.0")
    return ws, Phoenix(ws, "1.0.0")


def _sql(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def _incompressible(n: int) -> str:
    import secrets

    return secrets.token_hex(n // 2)


def test_toast_omission_leaves_unchanged_large_values_out_of_updates(rt: Any) -> None:
    _, info, tok = rt()
    big, small_big = _incompressible(6000), "y" * 6000  # the second compresses inline

    async def main() -> None:
        ws, ph = await _connect(info)
        try:
            await ph.join_live("realtime:toast", CHANGES_A, tok)
            _sql(info.dsn, "INSERT INTO items (id, system_id, title, body, tags) "
                 "VALUES (1, 'A', 't', %s, %s)", (big, json.dumps({"s": small_big})))
            _sql(info.dsn, "UPDATE items SET title = 'after' WHERE id = 1")
            _sql(info.dsn, "UPDATE items SET body = %s WHERE id = 1", (big + "!",))
            ins = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            upd = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            upd2 = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            assert ins["payload"]["data"]["record"]["body"] == big
            rec = upd["payload"]["data"]["record"]
            assert rec["title"] == "after" and "body" not in rec
            assert rec["tags"] == {"s": small_big}  # compressed under the threshold: kept
            names = [c["name"] for c in upd["payload"]["data"]["columns"]]
            assert "body" in names
            assert upd2["payload"]["data"]["record"]["body"] == big + "!"  # changed: sent
        finally:
            await ws.close()

    _run(main())


def test_no_toast_omission_sends_whole_records(rt: Any) -> None:
    _, info, tok = rt(toast_omission=False)
    big = _incompressible(6000)

    async def main() -> None:
        ws, ph = await _connect(info)
        try:
            await ph.join_live("realtime:toast", CHANGES_A, tok)
            _sql(info.dsn, "INSERT INTO items (id, system_id, body) VALUES (1, 'A', %s)", (big,))
            _sql(info.dsn, "UPDATE items SET title = 'after' WHERE id = 1")
            await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            upd = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            assert upd["payload"]["data"]["record"]["body"] == big
        finally:
            await ws.close()

    _run(main())


def test_realtime_rate_limit_drops_changes_silently(rt: Any) -> None:
    srv, info, tok = rt(realtime_rate_limit=5)

    async def main() -> None:
        ws, ph = await _connect(info)
        try:
            await ph.join_live("realtime:rate", CHANGES_A, tok)
            _sql(info.dsn, "INSERT INTO items (id, system_id) "
                 "SELECT g, 'A' FROM generate_series(1, 30) g")
            got: list[dict[str, Any]] = []
            with pytest.raises(TimeoutError):
                while True:
                    got.append(await ph.recv_until(lambda m: m["event"] != "presence_state",
                                                   timeout=1.5))
            assert all(m["event"] == "postgres_changes" for m in got)  # no error frame
            assert 5 <= len(got) < 30
            assert ws.state.name == "OPEN"
            await asyncio.sleep(1.1)  # a new second: delivery resumes
            _sql(info.dsn, "UPDATE items SET title = 'later' WHERE id = 1")
            msg = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            assert msg["payload"]["data"]["record"]["title"] == "later"
        finally:
            await ws.close()

    _run(main())


def test_restart_capture_resends_subscribed_without_closing(rt: Any) -> None:
    srv, info, tok = rt(enable_faults=True)

    async def main() -> None:
        ws, ph = await _connect(info)
        ws2, ph2 = await _connect(info)
        try:
            await ph.join_live("realtime:one", CHANGES_A, tok)
            await ph2.join_live("realtime:two", CHANGES_A, tok)
            await asyncio.to_thread(srv.restart_capture)
            for client in (ph, ph2):
                msg = await client.recv_until(lambda m: m["event"] == "system")
                assert msg["payload"]["message"] == "Subscribed to PostgreSQL"
                assert msg["payload"]["status"] == "ok"
            async with httpx.AsyncClient(base_url=info.url) as http:
                denied = await http.post("/_devserver/realtime/restart",
                                         headers=anon_headers(info))
                assert denied.status_code == 403
                resp = await http.post("/_devserver/realtime/restart",
                                       headers=service_headers(info))
                assert resp.status_code == 200, resp.text
            msg = await ph.recv_until(lambda m: m["event"] == "system")
            assert msg["payload"]["message"] == "Subscribed to PostgreSQL"
            _sql(info.dsn, "INSERT INTO items (id, system_id) VALUES (9, 'A')")
            change = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            assert change["payload"]["data"]["record"]["id"] == 9
            change = await ph2.recv_until(lambda m: m["event"] == "postgres_changes")
            assert change["payload"]["data"]["record"]["id"] == 9
        finally:
            await ws.close()
            await ws2.close()

    _run(main())


def test_private_only_channels_refuse_public_joins(rt: Any) -> None:
    _, info, tok = rt(private_only_channels=True)

    async def main() -> None:
        ws, ph = await _connect(info)
        try:
            _, reply = await ph.join("realtime:public", CHANGES_A, tok)
            assert reply["payload"] == {"status": "error", "response": {
                "reason": "PrivateOnly: This project only allows private channels"}}
            # a private join is authorised by RLS on realtime.messages (as the user)
            _sql(info.dsn, "CREATE POLICY private_topic ON realtime.messages FOR SELECT TO"
                 " authenticated USING (realtime.topic() = 'private')")
            ref = ph.next_ref()
            await ph.send("realtime:private", "phx_join", {"config": {
                "private": True, "postgres_changes": CHANGES_A}, "access_token": tok},
                ref=ref, join_ref=ref)
            reply = await ph.recv_until(lambda m: m["event"] == "phx_reply" and m["ref"] == ref)
            assert reply["payload"]["status"] == "ok"
            msg = await ph.recv_until(lambda m: m["event"] == "system")
            assert msg["payload"]["message"] == "Subscribed to PostgreSQL"
        finally:
            await ws.close()

    _run(main())


def test_public_channels_allowed_by_default(rt: Any) -> None:
    _, info, tok = rt()

    async def main() -> None:
        ws, ph = await _connect(info)
        try:
            await ph.join_live("realtime:public", CHANGES_A, tok)
        finally:
            await ws.close()

    _run(main())


def test_realtime_accepts_new_keys_and_asymmetric_tokens(rt: Any) -> None:
    _, info, tok = rt(jwt_signing="asymmetric")
    assert pyjwt.get_unverified_header(tok)["alg"] == "ES256"

    async def main() -> None:
        ws, ph = await _connect(info, apikey=info.publishable_key)
        try:
            await ph.join_live("realtime:es", CHANGES_A, tok)
            _sql(info.dsn, "INSERT INTO items (id, system_id) VALUES (3, 'A')")
            change = await ph.recv_until(lambda m: m["event"] == "postgres_changes")
            assert change["payload"]["data"]["record"]["id"] == 3
        finally:
            await ws.close()

    _run(main())
