"""The status web app over real HTTP on 127.0.0.1 (httpx against a running StatusServer).

The engine is not part of these tests: MemoryStatusProvider stands in for it (the seam).
"""

from __future__ import annotations

import ast
import json
import re
import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from helpers import wait_for
from promtext import parse
from tablesync.config import StatusConfig
from tablesync.errors import ConfigError, TablesyncError
from tablesync.status import QUEUE_ALERT_DEPTH, StatusSnapshot
from tablesync.web import CSRF_HEADER, MemoryStatusProvider, StatusServer, WebOptions
from tablesync.web.app import host_name
from tablesync.web.server import _allowed_hosts

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXNlY3JldA"
GREEN = StatusSnapshot(
    system_id="sys-a", state="Connected", engine_alive=True, queue_depth=0,
    last_sync_at="2026-11-24T21:00:00+00:00", websocket="connected",
    generated_at="2026-11-24T21:00:01+00:00",
)
CONFLICT = {
    "table": "tasks", "record_id": "42", "winner": {"title": "b", "_ts_origin": "sys-b"},
    "loser": {"title": "a", "_ts_origin": "sys-a"}, "resolved_at": "2026-11-24T21:00:00+00:00",
    "reason": "remote version newer",
}


class Harness:
    def __init__(self, server: StatusServer, provider: MemoryStatusProvider) -> None:
        self.server, self.provider = server, provider
        self.client = httpx.Client(base_url=server.url, timeout=5.0)
        login = self.client.get(server.login_link())     # as a browser: the session cookie
        assert login.status_code == 303, login.text

    def post_sync(self, **headers: str) -> httpx.Response:
        return self.client.post("/api/sync", headers=headers)

    def good_headers(self) -> dict[str, str]:
        return {"Origin": self.server.url, CSRF_HEADER: self.server.csrf_token}


@pytest.fixture
def web() -> Iterator[Harness]:
    provider = MemoryStatusProvider(GREEN)
    options = WebOptions(poll_interval_s=0.02, heartbeat_s=0.2)
    server = StatusServer(provider, "127.0.0.1", 0, options=options)
    server.start()
    harness = Harness(server, provider)
    try:
        yield harness
    finally:
        harness.client.close()
        server.stop()


def test_start_returns_bound_port_and_serves_status_json(web: Harness) -> None:
    assert web.server.port > 0
    r = web.client.get("/api/status")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == GREEN.to_dict()
    assert r.json()["indicator"] == "green"


def test_status_follows_the_provider(web: Harness) -> None:
    web.provider.set_snapshot(replace(GREEN, state="Disconnected", queue_depth=3,
                                      websocket="disconnected"))
    body = web.client.get("/api/status").json()
    assert (body["indicator"], body["queue_depth"]) == ("yellow", 3)


def test_conflicts_endpoint_newest_first_and_limited(web: Harness) -> None:
    for n in range(3):
        web.provider.add_conflict({**CONFLICT, "record_id": str(n)})
    body = web.client.get("/api/conflicts", params={"limit": 2}).json()
    assert [c["record_id"] for c in body["conflicts"]] == ["2", "1"]
    assert set(body["conflicts"][0]) == {"table", "record_id", "winner", "loser",
                                         "resolved_at", "reason"}
    assert len(web.client.get("/api/conflicts").json()["conflicts"]) == 3


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "501"])
def test_conflicts_rejects_bad_limit(web: Harness, limit: str) -> None:
    r = web.client.get("/api/conflicts", params={"limit": limit})
    assert r.status_code == 400
    assert "limit must be an integer" in r.json()["error"]


def test_sync_with_same_origin_and_token_is_accepted(web: Harness) -> None:
    r = web.post_sync(**web.good_headers())
    assert (r.status_code, r.json()) == (202, {"status": "requested"})
    r = web.post_sync(**{"Sec-Fetch-Site": "same-origin", CSRF_HEADER: web.server.csrf_token})
    assert r.status_code == 202
    assert web.provider.sync_requests == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"Origin": None}, "missing Origin"),
    ({CSRF_HEADER: None}, "X-CSRF-Token"),
    ({CSRF_HEADER: "forged"}, "X-CSRF-Token"),
    ({"Origin": "http://evil.example"}, "cross-origin"),
    ({"Origin": "null"}, "cross-origin"),
    ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
    ({"Sec-Fetch-Site": "same-site"}, "cross-site"),
])
def test_cross_site_sync_is_refused(web: Harness, change: dict[str, Any], message: str) -> None:
    headers = {**web.good_headers(), **change}
    r = web.post_sync(**{k: v for k, v in headers.items() if v is not None})
    assert r.status_code == 403
    assert message in r.json()["error"]
    assert web.provider.sync_requests == 0


def test_csrf_token_is_per_server_and_embedded_in_page(web: Harness) -> None:
    other = StatusServer(MemoryStatusProvider(GREEN))
    assert other.csrf_token != web.server.csrf_token
    assert len(web.server.csrf_token) >= 32
    page = web.client.get("/").text
    assert f'<meta name="csrf-token" content="{web.server.csrf_token}">' in page


def test_sync_is_post_only(web: Harness) -> None:
    assert web.client.get("/api/sync").status_code == 405


def test_sync_failure_is_reported_as_json(web: Harness) -> None:
    def refuse() -> None:
        raise TablesyncError("engine is stopped")

    web.provider._on_sync = refuse
    r = web.post_sync(**web.good_headers())
    assert (r.status_code, r.json()) == (503, {"error": "engine is stopped"})


def test_foreign_host_header_is_refused(web: Harness) -> None:
    """DNS rebinding: a page served as evil.example that resolves to 127.0.0.1."""
    r = web.client.get("/api/status", headers={"Host": f"evil.example:{web.server.port}"})
    assert r.status_code == 400
    r = web.client.get("/api/status", headers={"Host": f"localhost:{web.server.port}"})
    assert r.status_code == 200


def test_security_headers_and_no_cors(web: Harness) -> None:
    for path in ("/", "/api/status", "/static/app.js", "/metrics"):
        r = web.client.get(path, headers={"Origin": "http://evil.example"})
        assert r.headers["x-content-type-options"] == "nosniff", path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert not any(h.startswith("access-control-") for h in r.headers), path
    r = web.client.options("/api/sync", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_page_has_no_inline_script_and_serves_assets(web: Harness) -> None:
    page = web.client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts == ['<script src="/static/app.js" defer>']
    assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers
    js = web.client.get("/static/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in js.text and "innerHTML" not in js.text
    assert web.client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert web.client.get("/static/other.js").status_code == 404


def test_healthz_ok(web: Harness) -> None:
    r = web.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(("change", "reason"), [
    ({"engine_alive": False}, "engine thread is not running"),
    ({"websocket": "disconnected", "websocket_down_s": 31.0}, "websocket down for 31s"),
    ({"queue_depth": QUEUE_ALERT_DEPTH}, f"queue depth {QUEUE_ALERT_DEPTH} >= 1000"),
])
def test_healthz_unhealthy(web: Harness, change: dict[str, Any], reason: str) -> None:
    web.provider.set_snapshot(replace(GREEN, **change))
    r = web.client.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "unhealthy", "reasons": [reason]}


def test_healthz_within_websocket_grace_is_ok(web: Harness) -> None:
    web.provider.set_snapshot(replace(GREEN, websocket="disconnected", websocket_down_s=29.0,
                                      queue_depth=QUEUE_ALERT_DEPTH - 1))
    assert web.client.get("/healthz").status_code == 200


def test_healthz_when_provider_fails(web: Harness) -> None:
    def broken() -> StatusSnapshot:
        raise RuntimeError("store locked")

    web.provider.snapshot = broken  # type: ignore[method-assign]
    r = web.client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["reasons"] == ["status unavailable: RuntimeError: store locked"]


def test_metrics_endpoint(web: Harness) -> None:
    web.provider.metrics().push_latency.observe(0.07)
    web.provider.set_snapshot(replace(GREEN, queue_depth=4, parked=1))
    r = web.client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse(r.text)
    assert fams["tablesync_queue_depth"].samples == [
        ("tablesync_queue_depth", {"system_id": "sys-a"}, 4.0)]
    assert fams["tablesync_parked_records"].samples[0][2] == 1
    count = [v for n, _, v in fams["tablesync_push_latency_seconds"].samples
             if n.endswith("_count")]
    assert count == [1]


def test_no_secret_is_ever_rendered(web: Harness) -> None:
    web.provider.set_snapshot(replace(
        GREEN, last_error=f"401 Authorization: Bearer {JWT}", extra={"token": JWT},
    ))
    web.provider.add_conflict({**CONFLICT, "winner": {"note": f"access_token={JWT}"}})
    bodies = [web.client.get(p).text for p in
              ("/", "/api/status", "/api/conflicts", "/metrics", "/healthz")]
    bodies.append(_first_events(web, 1)[0][1])
    for body in bodies:
        assert JWT not in body
        assert "c2lnbmF0dXJl" not in body
    status = web.client.get("/api/status").json()
    assert status["last_error"] == "401 Authorization: Bearer ***"
    assert status["extra"] == {"token": "***"}


def _read_events(lines: Iterator[str], count: int) -> list[tuple[str, str]]:
    """The next ``count`` SSE frames as (event or ':comment', data)."""
    frames: list[tuple[str, str]] = []
    event, data = "", ""
    for line in lines:
        if line.startswith(":"):
            frames.append((":", line[1:].strip()))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and event:
            frames.append((event, data))
            event, data = "", ""
        if len(frames) >= count:
            return frames
    return frames


def _first_events(web: Harness, count: int) -> list[tuple[str, str]]:
    with web.client.stream("GET", "/api/events") as r:
        return _read_events(r.iter_lines(), count)


def test_events_push_changes_and_heartbeats(web: Harness) -> None:
    with web.client.stream("GET", "/api/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        (kind, data), = _read_events(lines, 1)
        assert kind == "status" and json.loads(data) == GREEN.to_dict()
        web.provider.set_snapshot(replace(GREEN, state="Disconnected", queue_depth=2))
        (kind, data), = _read_events(lines, 1)
        assert kind == "status" and json.loads(data)["queue_depth"] == 2
        # nothing changes (only generated_at): heartbeats, no new status event
        web.provider.set_snapshot(replace(GREEN, state="Disconnected", queue_depth=2,
                                          generated_at="2026-11-24T22:00:00+00:00"))
        assert _read_events(lines, 2) == [(":", "heartbeat"), (":", "heartbeat")]


def test_events_report_provider_failure_and_recover(web: Harness) -> None:
    real = web.provider.snapshot
    calls = {"n": 0}

    def flaky() -> StatusSnapshot:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("store locked")
        return real()

    web.provider.snapshot = flaky  # type: ignore[method-assign]
    frames = _first_events(web, 2)
    assert frames[0] == ("failure", json.dumps({"error": "RuntimeError: store locked"}))
    assert frames[1][0] == "status"


def test_event_stream_is_bounded() -> None:
    provider = MemoryStatusProvider(GREEN)
    options = WebOptions(poll_interval_s=0.02, heartbeat_s=10.0, max_stream_s=0.3)
    with StatusServer(provider, options=options) as server:
        started = time.monotonic()
        with httpx.stream("GET", f"{server.url}/api/events", timeout=5.0,
                          headers=server.auth_headers()) as r:
            frames = _read_events(r.iter_lines(), 10)
        assert [k for k, _ in frames] == ["status"]  # then the server ended the stream
        assert time.monotonic() - started < 3.0


def test_client_disconnect_ends_the_stream(web: Harness) -> None:
    with web.client.stream("GET", "/api/events") as r:
        lines = r.iter_lines()  # kept alive: dropping the iterator closes the connection
        _read_events(lines, 1)
        assert web.server.app.state.sse_clients == 1
    wait_for(lambda: web.server.app.state.sse_clients == 0, 3.0, what="the stream closed")


def test_stop_is_bounded_with_open_streams() -> None:
    provider = MemoryStatusProvider(GREEN)
    server = StatusServer(provider, options=WebOptions(poll_interval_s=0.02))
    server.start()
    ended = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/api/events", timeout=10.0,
                              headers=server.auth_headers()) as r:
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.set()

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    wait_for(lambda: server.app.state.sse_clients == 1, 3.0, what="one stream open")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3.0
    assert ended.wait(3.0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=1.0)
    server.stop()  # idempotent


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"\[status\] port.*cannot listen on 127.0.0.1"):
            StatusServer(MemoryStatusProvider(GREEN), "127.0.0.1", port).start()


def test_start_twice_is_refused(web: Harness) -> None:
    with pytest.raises(TablesyncError, match="already started"):
        web.server.start()


def test_from_config_off_without_port() -> None:
    provider = MemoryStatusProvider(GREEN)
    assert StatusServer.from_config(provider, StatusConfig()) is None
    server = StatusServer.from_config(provider, StatusConfig(port=0))
    assert server is not None and (server.host, server.port) == ("127.0.0.1", 0)


def test_provider_protocol_is_satisfied_by_the_fake() -> None:
    from tablesync.web import StatusProvider

    assert isinstance(MemoryStatusProvider(GREEN), StatusProvider)
    with pytest.raises(ValueError, match="lacks reason"):
        MemoryStatusProvider(GREEN).add_conflict({k: v for k, v in CONFLICT.items()
                                                  if k != "reason"})


def test_provider_failure_is_503_json_not_500(web: Harness) -> None:
    def broken() -> StatusSnapshot:
        raise RuntimeError(f"db locked, token {JWT}")

    web.provider.snapshot = broken  # type: ignore[method-assign]
    r = web.client.get("/api/status")
    assert r.status_code == 503
    assert r.json() == {"error": "status unavailable: RuntimeError: db locked, token ***"}
    r = web.client.get("/metrics")
    assert r.status_code == 503 and JWT not in r.text


def test_unexpected_sync_failure_is_503(web: Harness) -> None:
    def bug() -> None:
        raise KeyError("x")

    web.provider._on_sync = bug
    r = web.post_sync(**web.good_headers())
    assert (r.status_code, r.json()) == (503, {"error": "sync request failed: KeyError: 'x'"})


def test_values_json_lacks_are_rendered_as_text(web: Harness) -> None:
    when = datetime(2026, 11, 24, 21, tzinfo=timezone.utc)
    web.provider.add_conflict({**CONFLICT, "resolved_at": when})
    web.provider.set_snapshot(replace(GREEN, extra={"since": when}))
    assert web.client.get("/api/conflicts").json()["conflicts"][0]["resolved_at"] == str(when)
    assert web.client.get("/api/status").json()["extra"] == {"since": str(when)}
    (kind, data), = _first_events(web, 1)
    assert json.loads(data)["extra"] == {"since": str(when)}


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8787", "127.0.0.1"), ("LocalHost:1", "localhost"), ("localhost", "localhost"),
    ("[::1]:8787", "::1"), ("[::1]", "::1"), ("::1", "::1"), ("", ""), ("[oops", ""),
])
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_only_the_web_package_imports_starlette_and_uvicorn() -> None:
    """Layering: the status page's web framework stays inside tablesync/web (the devserver
    has its own app); metrics.py and status.py stay pure stdlib + tablesync."""
    root = Path(__file__).resolve().parent.parent / "tablesync"
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        imported = _top_level_imports(path)
        if not rel.startswith(("web/", "devserver/")):
            assert not imported & {"starlette", "uvicorn"}, rel
        if rel in ("metrics.py", "status.py", "web/provider.py"):
            assert imported <= {"__future__", "contextlib", "dataclasses", "datetime", "math",
                                "pathlib", "tempfile", "threading", "time", "typing",
                                "tablesync"}, (rel, imported)


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_configured_host_is_allowed_alongside_loopback_names() -> None:
    options = WebOptions(poll_interval_s=0.02)
    with StatusServer(MemoryStatusProvider(GREEN), "127.0.0.2", 0, options=options) as server:
        assert server.url.startswith("http://127.0.0.2:")
        assert server.csrf_token == options.csrf_token
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        evil = httpx.get(f"{server.url}/healthz", headers={"Host": "evil.example"})
        assert evil.status_code == 400
    everywhere = _allowed_hosts("0.0.0.0")   # the allow-list holds on 0.0.0.0 too
    assert "*" not in everywhere and {"127.0.0.1", "localhost", "::1"} <= set(everywhere)
    assert socket.gethostname().lower() in everywhere
    assert _allowed_hosts("::1") == ("127.0.0.1", "localhost", "::1")
