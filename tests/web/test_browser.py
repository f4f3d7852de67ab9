"""The status page in real headless Chromium: indicator, live updates, Sync now, conflicts.

The provider is MemoryStatusProvider (the engine is wired in later); screenshots of each
state are saved under the test's tmp_path.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import wait_for
from pages import open_page, playwright_expect, shot
from tablesync.status import StatusSnapshot
from tablesync.web import MemoryStatusProvider, StatusServer, WebOptions

pytestmark = pytest.mark.browser

GREEN = StatusSnapshot(
    system_id="sys-a", state="Connected", engine_alive=True, queue_depth=0,
    last_sync_at="2026-11-24T21:00:00+00:00", websocket="connected",
    generated_at="2026-11-24T21:00:01+00:00",
)
OFFLINE = replace(GREEN, state="Disconnected", websocket="disconnected", websocket_down_s=12.0,
                  queue_depth=3, oldest_queued_at="2026-11-24T21:05:00+00:00",
                  oldest_queued_age_s=40.0)
CONFLICT = {
    "table": "tasks", "record_id": "42",
    "winner": {"id": 42, "title": "ship it", "_ts_origin": "sys-b"},
    "loser": {"id": 42, "title": "ship later", "_ts_origin": "sys-a"},
    "resolved_at": "2026-11-24T21:10:00+00:00", "reason": "remote version is newer",
}
TIMEOUT_MS = 5000


@pytest.fixture
def served() -> Iterator[tuple[StatusServer, MemoryStatusProvider]]:
    provider = MemoryStatusProvider(GREEN)
    server = StatusServer(provider, "127.0.0.1", 0, options=WebOptions(poll_interval_s=0.05))
    server.start()
    try:
        yield server, provider
    finally:
        server.stop()


def test_indicator_green_yellow_green_live(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    light = page.locator("#indicator")
    expect(light).to_have_attribute("data-indicator", "green", timeout=TIMEOUT_MS)
    expect(page.locator("#indicator-label")).to_have_text("All changes synced")
    expect(page.locator("#live")).to_have_attribute("data-live", "live")
    expect(page.locator("#last-sync")).to_contain_text("2026-11-24 21:00:00 UTC")
    expect(page.locator("#websocket")).to_have_text("connected")
    shot(page, tmp_path, "1-green")

    provider.set_snapshot(OFFLINE)  # backend gone, rows written: offline and queueing
    expect(light).to_have_attribute("data-indicator", "yellow", timeout=TIMEOUT_MS)
    expect(page.locator("#indicator-label")).to_have_text("Offline: 3 changes queued")
    expect(page.locator("#queue-depth")).to_have_text("3")
    expect(page.locator("#websocket")).to_have_text("disconnected for 12 s")
    shot(page, tmp_path, "2-yellow-offline-queued")

    provider.set_snapshot(replace(GREEN, last_sync_at="2026-11-24T21:20:00+00:00"))
    expect(light).to_have_attribute("data-indicator", "green", timeout=TIMEOUT_MS)
    expect(page.locator("#queue-depth")).to_have_text("0")
    expect(page.locator("#last-sync")).to_contain_text("2026-11-24 21:20:00 UTC")
    shot(page, tmp_path, "3-green-again")
    assert page.evaluate("window.__noReload") == "same page"  # updated live, no reload
    assert page.errors == []


def test_sync_now_button_requests_a_sync(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                         timeout=TIMEOUT_MS)
    page.click("#sync-now")
    expect(page.locator("#sync-result")).to_have_text("Sync requested", timeout=TIMEOUT_MS)
    wait_for(lambda: provider.sync_requests == 1, 5.0, what="1 sync request")
    shot(page, tmp_path, "4-sync-requested")
    page.click("#sync-now")
    wait_for(lambda: provider.sync_requests == 2, 5.0, what="2 sync requests")
    assert page.errors == []


def test_conflict_shows_notification_and_list(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    banner = page.locator("#conflict-banner")
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                         timeout=TIMEOUT_MS)
    expect(banner).to_be_hidden()
    expect(page.locator("#conflicts-empty")).to_be_visible()

    provider.add_conflict(CONFLICT)
    provider.set_snapshot(replace(GREEN, conflicts_24h=1))
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(banner).to_contain_text("1 conflict in the last 24 h")
    row = page.locator("#conflicts-list .conflict")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("tasks")
    expect(row).to_contain_text("42")
    expect(row).to_contain_text("ship later")
    expect(row).to_contain_text("remote version is newer")
    expect(row.locator('tr[data-field="title"]')).to_have_class("changed")
    expect(row.locator('tr[data-field="id"]')).to_have_class("same")
    expect(page.locator("#conflicts-24h")).to_have_text("1")
    shot(page, tmp_path, "5-conflict")

    page.click("#conflict-dismiss")
    expect(banner).to_be_hidden()
    provider.add_conflict({**CONFLICT, "record_id": "43"})
    provider.set_snapshot(replace(GREEN, conflicts_24h=2))  # a new one shows it again
    expect(banner).to_contain_text("2 conflicts", timeout=TIMEOUT_MS)
    expect(row).to_have_count(2)
    assert page.evaluate("window.__noReload") == "same page"
    assert page.errors == []


def test_red_with_reauth_banner(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    provider.set_snapshot(replace(GREEN, state="Failed", reauth_required=True,
                                  last_error="refresh token rejected", websocket="off"))
    open_page(page, server)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "red",
                                                         timeout=TIMEOUT_MS)
    expect(page.locator("#indicator-label")).to_have_text("Re-authentication required")
    expect(page.locator("#reauth-banner")).to_be_visible()
    expect(page.locator("#last-error")).to_have_text("refresh token rejected")
    shot(page, tmp_path, "6-red-reauth")


def test_cross_site_page_cannot_trigger_sync(page: Any, served: Any) -> None:
    """A form on another origin posting to /api/sync is refused. The browser is logged in,
    and another port of 127.0.0.1 is the *same site*, so the SameSite=Strict cookie does
    go along: the Sec-Fetch-Site/Origin and CSRF-token checks are what refuse it."""
    server, provider = served
    open_page(page, server)
    target = f"{server.url}/api/sync"
    html = (f'<form id="f" method="post" action="{target}"></form>'
            '<script>document.getElementById("f").submit()</script>').encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        with page.expect_response(target) as info:
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        assert info.value.status == 403
        assert "cross-site request refused" in info.value.json()["error"]
    finally:
        evil.shutdown()
        evil.server_close()
    assert provider.sync_requests == 0


def test_unreadable_status_shows_banner_then_recovers(page: Any, served: Any,
                                                      tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                         timeout=TIMEOUT_MS)
    real = provider.snapshot

    def broken() -> StatusSnapshot:
        raise RuntimeError("database is locked")

    provider.snapshot = broken
    banner = page.locator("#failure-banner")
    expect(banner).to_have_text("Status unavailable: RuntimeError: database is locked",
                                timeout=TIMEOUT_MS)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "unknown")
    expect(page.locator("#indicator-label")).to_have_text("Status unavailable")
    shot(page, tmp_path, "7-status-unavailable")
    provider.snapshot = real
    provider.set_snapshot(OFFLINE)
    expect(banner).to_be_hidden(timeout=TIMEOUT_MS)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "yellow")


def test_server_gone_turns_light_grey(page: Any, tmp_path: Path) -> None:
    """When the engine (and its status server) stops, the page stops claiming green."""
    expect = playwright_expect()
    server = StatusServer(MemoryStatusProvider(GREEN), options=WebOptions(poll_interval_s=0.05))
    server.start()
    try:
        open_page(page, server)
        expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                             timeout=TIMEOUT_MS)
    finally:
        server.stop()
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "unknown",
                                                         timeout=TIMEOUT_MS)
    expect(page.locator("#live")).to_have_text("reconnecting…")
    expect(page.locator("#indicator-label")).to_have_text("No connection to the sync engine")
    shot(page, tmp_path, "8-server-gone")


def test_stream_end_reconnects_without_going_grey(page: Any, tmp_path: Path) -> None:
    """Streams end after max_stream_s on purpose; the page reconnects and stays green."""
    expect = playwright_expect()
    provider = MemoryStatusProvider(GREEN)
    options = WebOptions(poll_interval_s=0.05, max_stream_s=0.5)
    with StatusServer(provider, options=options) as server:
        open_page(page, server)
        page.evaluate("""() => {
            window.__seen = new Set();
            new MutationObserver(() => window.__seen.add(
                document.getElementById('indicator').dataset.indicator))
              .observe(document.getElementById('indicator'), {attributes: true});
        }""")
        # at least one stream end (after max_stream_s) and reconnect (retry: 2 s)
        wait_for(lambda: server.app.state.sse_clients == 1, 5.0, what="the stream open")
        wait_for(lambda: server.app.state.sse_clients == 0, 5.0, what="the stream ended")
        wait_for(lambda: server.app.state.sse_clients == 1, 10.0, what="the page reconnected")
        provider.set_snapshot(OFFLINE)
        expect(page.locator("#indicator")).to_have_attribute("data-indicator", "yellow",
                                                             timeout=TIMEOUT_MS)
        assert "unknown" not in page.evaluate("[...window.__seen]")
        expect(page.locator("#live")).to_have_text("live")
