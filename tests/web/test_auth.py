"""Access to the status page and API (tablesync.web.auth) over real HTTP: one-time links,
the session cookie, the API token, the Host allow-list on 0.0.0.0, the parked actions, exact
versions; and `tablesync sync page` against a running `tablesync run`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.parked import ParkedRecord
from tablesync.status import StatusSnapshot
from tablesync.web import CSRF_HEADER, MemoryStatusProvider, StatusServer, WebOptions
from tablesync.web.auth import COOKIE_PREFIX

ROOT = Path(__file__).resolve().parents[2]
BIG = 117721298593447936        # 117721298593447940 once through a JavaScript number
SNAP = StatusSnapshot(system_id="sys-a", state="Connected", engine_alive=True, queue_depth=0)
PRIVATE = ("/", "/api/status", "/api/conflicts", "/api/parked", "/api/events")


@pytest.fixture
def server() -> Iterator[StatusServer]:
    provider = MemoryStatusProvider(SNAP)
    with StatusServer(provider, options=WebOptions(poll_interval_s=0.02,
                                                   max_stream_s=0.2)) as s:
        yield s


@contextmanager
def _browser(server: StatusServer) -> Iterator[httpx.Client]:
    """A client logged in through a one-time link, as a browser would be."""
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get(server.login_link()).status_code == 303
        yield client


def test_nothing_private_without_a_secret(server: StatusServer) -> None:
    for path in PRIVATE:
        r = httpx.get(server.url + path, timeout=5)
        assert r.status_code == 401, path
    page = httpx.get(server.url + "/", timeout=5).text
    assert "tablesync sync page" in page and server.csrf_token not in page
    for path in ("/api/sync", "/api/reset?discard_pending=1", "/api/parked/drop",
                 "/api/link"):
        r = httpx.post(server.url + path, timeout=5,
                       headers={"Origin": server.url, CSRF_HEADER: server.csrf_token})
        assert r.status_code == 401, path
    for path in ("/healthz", "/metrics", "/static/app.js", "/static/app.css"):
        assert httpx.get(server.url + path, timeout=5).status_code == 200, path


def test_a_one_time_link_sets_a_strict_http_only_cookie_once(server: StatusServer) -> None:
    link = server.login_link()
    r = httpx.get(link, timeout=5)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_PREFIX}{server.port}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    again = httpx.get(link, timeout=5)
    assert again.status_code == 401 and "used or has expired" in again.text
    assert httpx.get(server.url + "/?token=guess", timeout=5).status_code == 401
    with _browser(server) as client:
        page = client.get("/")
        assert page.status_code == 200 and server.csrf_token in page.text
        assert client.get("/api/status").json()["system_id"] == "sys-a"


def test_links_expire_and_are_bounded() -> None:
    options = WebOptions(link_ttl_s=1.0)
    with StatusServer(MemoryStatusProvider(SNAP), options=options) as server:
        links = [server.login_link() for _ in range(20)]      # at most 16 outstanding
        assert httpx.get(links[0], timeout=5).status_code == 401
        assert httpx.get(links[-1], timeout=5).status_code == 303
        time.sleep(1.1)
        assert httpx.get(links[-2], timeout=5).status_code == 401     # expired


def test_the_api_token_and_what_it_may_do(server: StatusServer) -> None:
    wrong = {"Authorization": "Bearer " + "x" * 43}
    assert httpx.get(server.url + "/api/status", headers=wrong, timeout=5).status_code == 401
    ok = server.auth_headers()
    assert httpx.get(server.url + "/api/status", headers=ok, timeout=5).status_code == 200
    # no CSRF token needed: another site's page cannot send the header
    assert httpx.post(server.url + "/api/sync", headers=ok, timeout=5).status_code == 202
    made = httpx.post(server.url + "/api/link", headers=ok, timeout=5)
    assert made.status_code == 201
    assert httpx.get(made.json()["url"], timeout=5).status_code == 303
    with _browser(server) as client:               # a page session cannot mint links
        r = client.post("/api/link", headers={"Origin": server.url,
                                              CSRF_HEADER: server.csrf_token})
        assert r.status_code == 403


def test_a_logged_in_page_still_needs_same_origin_and_csrf(server: StatusServer) -> None:
    with _browser(server) as client:
        assert client.post("/api/sync").status_code == 403
        r = client.post("/api/sync", headers={"Origin": "http://evil.example",
                                              CSRF_HEADER: server.csrf_token})
        assert r.status_code == 403
        r = client.post("/api/sync", headers={"Origin": server.url,
                                              CSRF_HEADER: server.csrf_token})
        assert r.status_code == 202


def test_host_allow_list_holds_on_all_interfaces() -> None:
    with StatusServer(MemoryStatusProvider(SNAP), "0.0.0.0", 0) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert server.url == base                      # what is printed and announced
        assert httpx.get(server.login_link(), timeout=5).status_code == 303
        rebound = httpx.get(base + "/healthz", headers={"Host": f"evil.example:{server.port}"},
                            timeout=5)
        assert rebound.status_code == 400
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200


def test_configured_allowed_hosts_are_accepted() -> None:
    from tablesync.config import StatusConfig

    config = StatusConfig(port=0, host="127.0.0.1", allowed_hosts=["status.lan"])
    server = StatusServer.from_config(MemoryStatusProvider(SNAP), config)
    assert server is not None
    with server:
        r = httpx.get(server.url + "/healthz", headers={"Host": "status.lan"}, timeout=5)
        assert r.status_code == 200


def test_versions_are_exact_strings(server: StatusServer) -> None:
    provider: MemoryStatusProvider = server.app.state.provider
    provider.add_conflict({"table": "tasks", "record_id": "1", "reason": "newer",
                           "resolved_at": "2026-12-01T00:00:00Z",
                           "winner": {"title": "b", "_ts_hlc": BIG, "_ts_origin": "b",
                                      "count": 3, "huge": 2**60, "flag": True},
                           "loser": {"title": "a", "_ts_hlc": BIG - 1, "_ts_origin": "a"}})
    with _browser(server) as client:
        text = client.get("/api/conflicts").text
    (conflict,) = json.loads(text)["conflicts"]
    assert conflict["winner"]["_ts_hlc"] == str(BIG) and '"117721298593447936"' in text
    assert conflict["winner"]["count"] == 3 and conflict["winner"]["flag"] is True
    assert conflict["winner"]["huge"] == str(2**60)


def test_store_conflicts_keep_exact_version_pairs(server: StatusServer) -> None:
    """The engine's conflict log shape: {version: [hlc, origin], base, deleted, data}."""
    provider: MemoryStatusProvider = server.app.state.provider
    state = {"version": [BIG, "sys-b"], "base": [5, "sys-a"], "deleted": False,
             "data": {"version": 3, "title": "x"}}          # a column named "version"
    provider.add_conflict({"table": "tasks", "record_id": "1", "reason": "newer",
                           "resolved_at": "2026-12-01T00:00:00Z", "winner": state,
                           "loser": state})
    with _browser(server) as client:
        (conflict,) = client.get("/api/conflicts").json()["conflicts"]
    assert conflict["winner"]["version"] == [str(BIG), "sys-b"]
    assert conflict["winner"]["base"] == ["5", "sys-a"]
    assert conflict["winner"]["data"] == {"version": 3, "title": "x"}


def test_parked_list_retry_and_drop(server: StatusServer, tmp_path: Path) -> None:
    provider: MemoryStatusProvider = server.app.state.provider
    provider.backup_dir = tmp_path
    provider.add_parked(ParkedRecord("push", "tasks", "t1", "permission denied (42501)",
                                     "2026-12-01 10:00:00.000", pending=2, version=str(BIG),
                                     row={"id": "t1", "title": "mine"}))
    provider.add_parked(ParkedRecord("pull", "tasks", "t2", "version beyond the clock bound",
                                     "2026-12-01 10:01:00.000", tries=3))
    post = {"Origin": server.url, CSRF_HEADER: server.csrf_token}
    with _browser(server) as client:
        listed = client.get("/api/parked").json()
        assert listed["actions"] is True
        assert [(p["kind"], p["record_id"]) for p in listed["parked"]] == [
            ("push", "t1"), ("pull", "t2")]
        assert listed["parked"][0]["version"] == str(BIG)
        status = client.get("/api/status").json()
        assert (status["parked"], status["refused"]) == (1, 1)
        assert client.post("/api/parked/retry?table=tasks&record_id=t1").status_code == 403
        r = client.post("/api/parked/retry?table=tasks&record_id=t1", headers=post)
        assert r.json() == {"released": 1} and provider.sync_requests == 1
        r = client.post("/api/parked/drop?table=tasks&record_id=t2&kind=pull", headers=post)
        backup = Path(r.json()["backup"])
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert json.loads(backup.read_text())["records"][0]["reason"].startswith("version")
        assert client.get("/api/parked").json()["parked"] == []
        r = client.post("/api/parked/drop?table=tasks&record_id=t2", headers=post)
        assert r.status_code == 409 and "no parked record tasks 't2'" in r.json()["error"]
        r = client.post("/api/parked/retry?table=tasks", headers=post)
        assert r.status_code == 400


def test_sync_page_prints_a_fresh_link_from_the_running_engine(tmp_path: Path) -> None:
    cfg = tmp_path / "sync.toml"
    tables = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
    cfg.write_text(
        f'[system]\nid = "system-a"\ndatabase = "{tmp_path}/a.db"\n[status]\nport = 0\n'
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp_path}/auth.json"\n'
        f'conflict_log = "{tmp_path}/conflicts.log"\n[tables.projects]' + tables)
    runner = CliRunner()
    res = runner.invoke(app, ["sync", "page", "--config", str(cfg)])
    assert res.exit_code == 1 and "no running engine" in res.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        control = tmp_path / "a.db.engine.json"
        deadline = time.monotonic() + 20
        while not control.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        assert stat.S_IMODE(control.stat().st_mode) == 0o600
        assert proc.stdout is not None
        printed = ""
        while "status page:" not in printed and time.monotonic() < deadline:
            printed += proc.stdout.readline()   # bounded: the deadline, and the engine prints it
        assert "/?token=" in printed          # the engine's own link, once at start
        res = runner.invoke(app, ["sync", "page", "--config", str(cfg)])
        assert res.exit_code == 0, res.output
        link = res.output.strip()
        assert link.startswith("http://127.0.0.1:") and "/?token=" in link
        with httpx.Client(timeout=5) as browser:
            assert browser.get(link).status_code == 303
            base = link.split("/?", 1)[0]
            assert browser.get(base + "/api/status").json()["system_id"] == "system-a"
        assert httpx.get(link, timeout=5).status_code == 401     # one-time
    finally:
        proc.terminate()
        proc.wait(20)
