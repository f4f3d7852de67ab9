"""REST (/rest/v1) over raw HTTP: status codes, headers and PostgREST error bodies."""

from __future__ import annotations

import httpx
import pytest

from tablesync.devserver.server import DevServerInfo

from .helpers import anon_headers, run_sql, service_headers, user_headers, user_token

pytestmark = pytest.mark.postgres
REP = {"Prefer": "return=representation"}


def _seed(http: httpx.Client, info: DevServerInfo, n: int = 5, system: str = "A") -> None:
    rows = [{"id": i, "system_id": system, "title": f"t{i}", "n": i % 3, "tags": None}
            for i in range(1, n + 1)]
    resp = http.post("/rest/v1/items", headers=service_headers(info), json=rows)
    assert resp.status_code == 201 and resp.text == ""


def test_select_filters_order_limit_and_content_range(http: httpx.Client, info: DevServerInfo,
                                                      items: str) -> None:
    _seed(http, info, 5)
    h = service_headers(info)
    resp = http.get("/rest/v1/items?select=id,title&n=gte.1&order=id.desc&limit=2", headers=h)
    assert resp.status_code == 200
    assert resp.json() == [{"id": 5, "title": "t5"}, {"id": 4, "title": "t4"}]
    assert resp.headers["content-range"] == "0-1/*"
    resp = http.get("/rest/v1/items?select=id&id=in.(1,3,9)&order=id", headers=h)
    assert [r["id"] for r in resp.json()] == [1, 3]
    resp = http.get("/rest/v1/items?select=id&id=not.in.(1,3)&order=id.asc", headers=h)
    assert [r["id"] for r in resp.json()] == [2, 4, 5]
    resp = http.get("/rest/v1/items?select=id&tags=is.null&id=lt.3&id=neq.1", headers=h)
    assert resp.json() == [{"id": 2}]
    resp = http.get("/rest/v1/items?select=id&or=(id.eq.1,and(id.gt.3,n.eq.2))&order=id",
                    headers=h)
    assert [r["id"] for r in resp.json()] == [1, 5]
    resp = http.get("/rest/v1/items?select=k:id,title&title=like.*3&offset=0", headers=h)
    assert resp.json() == [{"k": 3, "title": "t3"}]


def test_count_exact_partial_page_is_206_and_offset_past_end_is_416(
        http: httpx.Client, info: DevServerInfo, items: str) -> None:
    _seed(http, info, 5)
    h = {**service_headers(info), "Prefer": "count=exact"}
    resp = http.get("/rest/v1/items?select=id&order=id&limit=2&offset=1", headers=h)
    assert resp.status_code == 206
    assert resp.headers["content-range"] == "1-2/5"
    resp = http.get("/rest/v1/items?select=id&order=id&offset=9", headers=h)
    assert resp.status_code == 416
    assert resp.json()["code"] == "PGRST103"
    resp = http.get("/rest/v1/items?id=eq.99", headers=service_headers(info))
    assert resp.status_code == 200 and resp.json() == []
    assert resp.headers["content-range"] == "*/*"
    resp = http.get("/rest/v1/items?select=id&order=id",
                    headers={**service_headers(info), "Range-Unit": "items", "Range": "1-2"})
    assert resp.json() == [{"id": 2}, {"id": 3}] and resp.headers["content-range"] == "1-2/*"


def test_reads_are_capped_at_1000_rows(http: httpx.Client, info: DevServerInfo,
                                       items: str) -> None:
    run_sql(info.dsn, "INSERT INTO items (id, system_id) SELECT g, 'A' FROM generate_series(1, 1205) g")
    resp = http.get("/rest/v1/items?select=id&order=id&limit=5000", headers=service_headers(info))
    assert len(resp.json()) == 1000
    assert resp.headers["content-range"] == "0-999/*"
    resp = http.get("/rest/v1/items?select=id&order=id&offset=1000", headers=service_headers(info))
    assert len(resp.json()) == 205


def test_bulk_insert_needs_same_keys_unless_columns_given(http: httpx.Client,
                                                          info: DevServerInfo, items: str) -> None:
    rows = [{"id": 1, "system_id": "A", "title": "x"}, {"id": 2, "system_id": "A"}]
    resp = http.post("/rest/v1/items", headers=service_headers(info), json=rows)
    assert resp.status_code == 400
    assert resp.json() == {"code": "PGRST102", "details": None, "hint": None,
                           "message": "All object keys must match"}
    resp = http.post('/rest/v1/items?columns="id","system_id","title"',
                     headers={**service_headers(info), **REP}, json=rows)
    assert resp.status_code == 201
    assert [r["title"] for r in resp.json()] == ["x", None]


def test_missing_default_uses_column_defaults(http: httpx.Client, info: DevServerInfo,
                                              items: str) -> None:
    resp = http.post("/rest/v1/items?columns=id,system_id,created_at",
                     headers={**service_headers(info), "Prefer":
                              "return=representation, missing=default"},
                     json=[{"id": 1, "system_id": "A"}])
    assert resp.status_code == 201
    assert resp.json()[0]["created_at"] is not None


def test_upsert_merge_duplicates_201_then_200(http: httpx.Client, info: DevServerInfo,
                                              items: str) -> None:
    h = {**service_headers(info),
         "Prefer": "resolution=merge-duplicates,return=representation"}
    resp = http.post("/rest/v1/items?on_conflict=id", headers=h,
                     json=[{"id": 1, "system_id": "A", "title": "one"}])
    assert resp.status_code == 201
    resp = http.post("/rest/v1/items?on_conflict=id", headers=h,
                     json=[{"id": 1, "system_id": "A", "title": "uno"}])
    assert resp.status_code == 200
    assert resp.json()[0]["title"] == "uno"
    resp = http.post("/rest/v1/items", headers=h,
                     json=[{"id": 1, "system_id": "A", "title": "eins"},
                           {"id": 2, "system_id": "A", "title": "zwei"}])
    assert resp.status_code == 201
    resp = http.post("/rest/v1/items", headers={**service_headers(info), "Prefer":
                                                "resolution=ignore-duplicates,return=representation"},
                     json=[{"id": 1, "system_id": "A", "title": "ignored"}])
    assert resp.json() == []
    assert run_sql(info.dsn, "SELECT title FROM items WHERE id = 1") == [("eins",)]


def test_unique_violation_is_409_with_postgres_details(http: httpx.Client, info: DevServerInfo,
                                                       items: str) -> None:
    _seed(http, info, 1)
    resp = http.post("/rest/v1/items", headers=service_headers(info),
                     json={"id": 1, "system_id": "A"})
    assert resp.status_code == 409
    body = resp.json()
    assert set(body) == {"code", "details", "hint", "message"}
    assert body["code"] == "23505"
    assert body["message"] == 'duplicate key value violates unique constraint "items_pkey"'
    assert body["details"] == "Key (id)=(1) already exists."


def test_patch_and_delete_with_filters(http: httpx.Client, info: DevServerInfo,
                                       items: str) -> None:
    _seed(http, info, 3)
    h = service_headers(info)
    resp = http.patch("/rest/v1/items?id=eq.2", headers={**h, **REP}, json={"title": "two"})
    assert resp.status_code == 200 and resp.json()[0]["title"] == "two"
    resp = http.patch("/rest/v1/items?id=eq.99", headers=h, json={"title": "none"})
    assert resp.status_code == 204
    resp = http.patch("/rest/v1/items?id=gte.1", headers={**h, "Prefer": "count=exact"},
                      json={"n": 7})
    assert resp.status_code == 204 and resp.headers["content-range"] == "0-2/3"
    resp = http.delete("/rest/v1/items?id=in.(1,2)", headers={**h, **REP})
    assert resp.status_code == 200 and sorted(r["id"] for r in resp.json()) == [1, 2]
    resp = http.delete("/rest/v1/items?id=eq.3", headers={**h, "Prefer": "count=exact"})
    assert resp.status_code == 204 and resp.headers["content-range"] == "*/1"
    resp = http.delete("/rest/v1/items", headers=h)
    assert resp.status_code == 400 and resp.json()["code"] == "21000"


def test_rpc_shapes(http: httpx.Client, info: DevServerInfo, items: str) -> None:
    _seed(http, info, 3)
    h = service_headers(info)
    assert http.post("/rest/v1/rpc/add", headers=h, json={"a": 2, "b": 3}).text == "5"
    assert http.get("/rest/v1/rpc/add?a=2&b=5", headers=h).json() == 7
    rows = http.post("/rest/v1/rpc/visible_items", headers=h, json={}).json()
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[0]["system_id"] == "A"
    assert http.post("/rest/v1/rpc/item_ids", headers=h).json() == [1, 2, 3]
    resp = http.post("/rest/v1/rpc/touch", headers=h, json={"p_id": 1})
    assert resp.status_code == 204 and resp.text == ""
    assert http.post("/rest/v1/rpc/echo", headers=h, json={"payload": {"rows": [1, "x"]}}).json() \
        == {"rows": [1, "x"]}
    resp = http.post("/rest/v1/rpc/fail", headers=h, json={"msg": "boom"})
    assert resp.status_code == 400 and resp.json()["code"] == "P0001"
    assert resp.json()["message"] == "boom"
    resp = http.post("/rest/v1/rpc/nope", headers=h, json={"x": 1})
    assert resp.status_code == 404 and resp.json()["code"] == "PGRST202"
    resp = http.post("/rest/v1/rpc/add", headers=h, json={"a": 1, "zzz": 2})
    assert resp.status_code == 404 and resp.json()["code"] == "PGRST202"


def test_rpc_json_argument_is_read_from_the_body_by_postgres(http: httpx.Client,
                                                             info: DevServerInfo,
                                                             items: str) -> None:
    """A json/jsonb argument reaches the function as PostgreSQL parsed the body (PostgREST
    passes the body through): numbers keep their text (1.10), no Python re-encoding."""
    h = {**service_headers(info), "Content-Type": "application/json"}
    body = '{"payload": {"n": 1.10, "s": "\u00e9\u2028x", "big": 123456789012345678901234}}'
    resp = http.post("/rest/v1/rpc/echo", headers=h, content=body.encode())
    assert resp.status_code == 200
    assert '"n": 1.10' in resp.text and "123456789012345678901234" in resp.text
    assert resp.json()["s"] == "\u00e9\u2028x"
    resp = http.post("/rest/v1/rpc/echo", headers=h, content=b'{"payload": [1, {"a": null}]}')
    assert resp.json() == [1, {"a": None}]


def test_rpc_sees_jwt_claims(http: httpx.Client, info: DevServerInfo, items: str) -> None:
    token = user_token(http, info, "claims@example.com", "sys-1")
    claims = http.post("/rest/v1/rpc/whoami", headers=user_headers(info, token)).json()
    assert claims["role"] == "authenticated"
    assert claims["app_metadata"]["system_id"] == "sys-1"


def test_query_errors(http: httpx.Client, info: DevServerInfo, items: str) -> None:
    h = service_headers(info)
    resp = http.get("/rest/v1/items?id=eqq.1", headers=h)
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST100"
    resp = http.get("/rest/v1/items?limit=-1", headers=h)
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST100"
    resp = http.get("/rest/v1/items?select=nope", headers=h)
    assert resp.status_code == 400 and resp.json()["code"] == "42703"
    resp = http.get("/rest/v1/items?id=eq.notanumber", headers=h)
    assert resp.status_code == 400 and resp.json()["code"] == "22P02"
    resp = http.post("/rest/v1/items", headers=h, json={"id": 1, "system_id": "A", "bogus": 1})
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST204"
    resp = http.post("/rest/v1/items", headers=h, content=b"{not json")
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST102"
    resp = http.get("/rest/v1/missing_table", headers=h)
    assert resp.status_code == 404 and resp.json()["code"] == "PGRST205"


def test_single_object_accept_header(http: httpx.Client, info: DevServerInfo, items: str) -> None:
    _seed(http, info, 2)
    h = {**service_headers(info), "Accept": "application/vnd.pgrst.object+json"}
    resp = http.get("/rest/v1/items?select=id&id=eq.1", headers=h)
    assert resp.status_code == 200 and resp.json() == {"id": 1}
    resp = http.get("/rest/v1/items?select=id", headers=h)
    assert resp.status_code == 406 and resp.json()["code"] == "PGRST116"


def test_table_created_after_start_is_found(http: httpx.Client, info: DevServerInfo) -> None:
    run_sql(info.dsn, "CREATE TABLE late (id int primary key)")
    resp = http.get("/rest/v1/late", headers=service_headers(info))
    assert resp.status_code == 200 and resp.json() == []


def test_gateway_requires_a_known_apikey(http: httpx.Client, info: DevServerInfo,
                                         items: str) -> None:
    resp = http.get("/rest/v1/items")
    assert resp.status_code == 401
    assert resp.json() == {"message": "No API key found in request",
                           "hint": "No `apikey` request header or url param was found."}
    resp = http.get("/rest/v1/items", headers={"apikey": "nope"})
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"
    resp = http.get("/rest/v1/items", params={"apikey": info.anon_key})
    assert resp.status_code == 200


def test_rls_denial_is_401_for_anon_and_403_for_users(http: httpx.Client, info: DevServerInfo,
                                                      items: str) -> None:
    row = {"id": 1, "system_id": "A"}
    resp = http.post("/rest/v1/items", headers=anon_headers(info), json=row)
    assert resp.status_code == 401 and resp.json()["code"] == "42501"
    assert resp.headers["www-authenticate"] == "Bearer"
    token = user_token(http, info, "a@example.com", "B")
    resp = http.post("/rest/v1/items", headers=user_headers(info, token), json=row)
    assert resp.status_code == 403
    assert resp.json()["message"] == 'new row violates row-level security policy for table "items"'


def test_head_and_read_only_get_rpc(http: httpx.Client, info: DevServerInfo, items: str) -> None:
    _seed(http, info, 2)
    h = {**service_headers(info), "Prefer": "count=exact"}
    resp = http.head("/rest/v1/items", headers=h)
    assert resp.status_code == 200 and resp.text == ""
    assert resp.headers["content-range"] == "0-1/2"
    resp = http.get("/rest/v1/rpc/touch?p_id=1", headers=service_headers(info))
    assert resp.status_code == 405 and resp.json()["code"] == "25006"


def test_concurrent_requests_each_get_their_own_transaction(http: httpx.Client,
                                                            info: DevServerInfo,
                                                            items: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokens = {s: user_token(http, info, f"{s}@example.com", s) for s in ("A", "B")}

    def insert(i: int) -> int:
        system = "A" if i % 2 else "B"
        with httpx.Client(base_url=info.url, timeout=30) as client:
            resp = client.post("/rest/v1/items", headers=user_headers(info, tokens[system]),
                               json={"id": i, "system_id": system})
            return resp.status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(insert, range(40)))
    assert codes == [201] * 40
    for system, token in tokens.items():
        rows = http.get("/rest/v1/items?select=system_id", headers=user_headers(info, token)).json()
        assert len(rows) == 20 and {r["system_id"] for r in rows} == {system}


def test_rpc_set_results_take_select_filters_and_order(http: httpx.Client, info: DevServerInfo,
                                                       items: str) -> None:
    _seed(http, info, 4)
    h = service_headers(info)
    resp = http.post("/rest/v1/rpc/visible_items?select=id&id=gt.1&order=id.desc&limit=2",
                     headers=h, json={})
    assert resp.json() == [{"id": 4}, {"id": 3}]
    resp = http.get("/rest/v1/rpc/visible_items?select=id,title&n=eq.0", headers=h)
    assert resp.json() == [{"id": 3, "title": "t3"}]
    resp = http.post("/rest/v1/rpc/add?a=eq.1", headers=h, json={"a": 1, "b": 2})
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST100"
