"""Fault injection: REST/Auth answer 429/5xx on command, only for the service role."""

from __future__ import annotations

import httpx
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import anon_headers, service_headers

pytestmark = pytest.mark.postgres


def test_in_process_faults_answer_like_supabase(http: httpx.Client, server: DevServer,
                                                info: DevServerInfo, items: str) -> None:
    server.faults.add("rest", 503, count=2, retry_after=3)
    for _ in range(2):
        resp = http.get("/rest/v1/items", headers=anon_headers(info))
        assert resp.status_code == 503 and resp.headers["retry-after"] == "3"
        assert resp.json()["code"] == "PGRST001"
    assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 200
    server.faults.add("rest", 429, retry_after=1, path_prefix="/rest/v1/rpc/")
    assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 200
    resp = http.post("/rest/v1/rpc/add", headers=anon_headers(info), json={"a": 1, "b": 1})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    server.faults.add("auth", 429)
    resp = http.post("/auth/v1/token?grant_type=password", headers=anon_headers(info), json={})
    assert resp.json() == {"code": 429, "error_code": "over_request_rate_limit",
                           "msg": "Request rate limit reached"}


def test_http_fault_endpoint_needs_the_service_key(http: httpx.Client, info: DevServerInfo,
                                                   items: str) -> None:
    fault = {"surface": "rest", "status": 500, "count": None}
    assert http.post("/_devserver/faults", headers=anon_headers(info), json=fault).status_code == 403
    assert http.post("/_devserver/faults", headers=service_headers(info), json=fault).status_code == 201
    assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 500
    assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 500
    assert http.delete("/_devserver/faults", headers=service_headers(info)).status_code == 204
    assert http.get("/rest/v1/items", headers=anon_headers(info)).status_code == 200


def test_faults_are_off_by_default(pg_dsn: str) -> None:
    srv = DevServer(dsn=pg_dsn, auto_realtime=False)
    info = srv.start()
    try:
        srv.faults.add("rest", 503)
        with httpx.Client(base_url=info.url) as http:
            assert http.get("/rest/v1/", headers=anon_headers(info)).status_code == 200
            resp = http.post("/_devserver/faults", headers=service_headers(info),
                             json={"surface": "rest", "status": 503})
            assert resp.status_code == 404
    finally:
        srv.stop()
