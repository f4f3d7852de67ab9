"""What an operator sees, in real headless Chromium: per-table counts, push progress with
rate and ETA, the next retry, the activity chart, parked records with retry/drop,
conflicts as a field diff with exact versions, and the page without a login.

The states are those of ``tests/web/states.py`` (the screenshots in docs/operations.md
are made from the same ones by ``python -m tests.web.screenshots``).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest

from pages import open_page, playwright_expect, shot
from states import BIG, STATES, green
from tablesync.web import MemoryStatusProvider, StatusServer, WebOptions

pytestmark = pytest.mark.browser
TIMEOUT_MS = 5000


@pytest.fixture
def served() -> Iterator[tuple[StatusServer, MemoryStatusProvider]]:
    provider = MemoryStatusProvider(green())
    with StatusServer(provider, options=WebOptions(poll_interval_s=0.05)) as server:
        yield server, provider


def _show(page: Any, provider: MemoryStatusProvider, name: str) -> None:
    setup, ready = STATES[name]
    setup(provider)
    playwright_expect()(page.locator(ready).first).to_be_visible(timeout=TIMEOUT_MS)


def test_green_shows_tables_backend_and_activity(page: Any, served: Any,
                                                 tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "green")
    expect(page.locator("#backend-url")).to_have_text("https://xyzcompany.supabase.co")
    tasks = page.locator('#tables-body tr[data-table="tasks"]')
    expect(tasks.locator('[data-col="pushed"]')).to_have_text("15400")
    expect(tasks.locator('[data-col="pulled"]')).to_have_text("2210")
    expect(page.locator("#tables-body tr")).to_have_count(2)
    # 12 + 12 non-zero minutes: one bar each
    expect(page.locator("#activity-chart rect.bar.pushed")).to_have_count(10)
    expect(page.locator("#activity-chart rect.bar.pulled")).to_have_count(12)
    expect(page.locator("#chart-peak")).to_have_text("peak 4100/min")
    expect(page.locator("#progress-card")).to_be_hidden()
    expect(page.locator("#parked-card")).to_be_hidden()
    shot(page, tmp_path, "green")
    assert page.errors == []


def test_pushing_shows_progress_rate_and_eta_not_parked(page: Any, served: Any,
                                                        tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "pushing")
    expect(page.locator("#indicator-label")).to_have_text("Pushing 4100 of 15400 records")
    text = page.locator("#push-text")
    expect(text).to_contain_text("4100 of 15400 records, 66.67/s, ETA 3 min")
    assert page.locator("#push-bar").evaluate("b => [b.value, b.max]") == [4100, 15400]
    tasks = page.locator('#tables-body tr[data-table="tasks"]')
    expect(tasks.locator('[data-col="queued"]')).to_have_text("11300")
    shot(page, tmp_path, "pushing")
    assert page.errors == []


def test_offline_shows_the_next_retry(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "offline-retrying")
    expect(page.locator("#next-retry")).to_contain_text("in 3")   # "in 39 s" / "in 40 s"
    expect(page.locator("#next-retry")).to_contain_text("UTC")
    expect(page.locator("#indicator-label")).to_have_text("Offline: 42 changes queued")
    expect(page.locator("#last-error")).to_contain_text("connection refused")
    assert page.errors == []


def test_a_local_failure_names_its_cause(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "local-locked")
    expect(page.locator("#indicator-label")).to_contain_text(
        "Needs attention: local database locked")
    expect(page.locator("#cause")).to_have_text("local database locked")
    expect(page.locator("#last-error")).to_contain_text("database is locked")
    assert "unreachable" not in page.locator("#indicator-label").inner_text()
    shot(page, tmp_path, "local-locked")
    assert page.errors == []


def test_parked_list_with_retry_and_drop(page: Any, served: Any, tmp_path: Path) -> None:
    server, provider = served
    provider.backup_dir = tmp_path
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "parked")
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "red")
    expect(page.locator("#indicator-label")).to_have_text("2 records need attention: see below")
    rows = page.locator("#parked-body tr")
    expect(rows).to_have_count(2)
    push = page.locator('#parked-body tr[data-record="tasks/t-981"]')
    expect(push).to_contain_text("row-level security refused the write")
    expect(push).to_contain_text("2 changes held")
    expect(push).to_contain_text(str(BIG))                  # exact, never a JS number
    pull = page.locator('#parked-body tr[data-record="projects/p-17"]')
    expect(pull).to_contain_text("refused pull")
    expect(pull).to_contain_text("3 tries")
    shot(page, tmp_path, "parked")

    push.locator("button.retry").click()
    expect(page.locator("#parked-result")).to_have_text(
        "Released tasks t-981 for another try", timeout=TIMEOUT_MS)
    expect(rows).to_have_count(1)
    assert provider.sync_requests == 1

    drop = pull.locator("button.drop")
    drop.click()                                             # first click only arms it
    expect(drop).to_have_text("Confirm drop")
    assert len(provider.parked_records()) == 1
    drop.click()
    expect(page.locator("#parked-result")).to_contain_text("Dropped projects p-17; backup: ",
                                                           timeout=TIMEOUT_MS)
    (backup,) = tmp_path.glob("dropped-*.json")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert json.loads(backup.read_text())["records"][0]["tries"] == 3
    expect(page.locator("#parked-card")).to_be_hidden(timeout=TIMEOUT_MS)
    assert page.errors == []


def test_conflict_is_a_field_diff_with_exact_versions(page: Any, served: Any,
                                                      tmp_path: Path) -> None:
    server, provider = served
    expect = playwright_expect()
    open_page(page, server)
    _show(page, provider, "conflict")
    box = page.locator("#conflicts-list .conflict")
    expect(box.locator("tr.changed")).to_have_count(2)      # status and qty
    expect(box.locator('tr[data-field="status"]')).to_contain_text("done")
    expect(box.locator('tr[data-field="status"]')).to_contain_text("open")
    expect(box.locator('tr[data-field="title"]')).to_have_class("same")
    version = box.locator("tr.version")
    expect(version).to_contain_text("117721298593447936 from store-017")
    expect(version).to_contain_text(f"{BIG - 65536} from store-042")
    assert "117721298593447940" not in page.content()
    shot(page, tmp_path, "conflict")
    assert page.errors == []


def test_without_a_login_the_page_says_how_to_get_one(page: Any, served: Any,
                                                      tmp_path: Path) -> None:
    server, _provider = served
    expect = playwright_expect()
    response = page.goto(server.url + "/")
    assert response is not None and response.status == 401
    expect(page.locator('[data-testid="auth-needed"]')).to_contain_text("tablesync sync page")
    shot(page, tmp_path, "auth-required")
    link = server.login_link()
    page.goto(link)
    expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                         timeout=TIMEOUT_MS)
    assert page.url == server.url + "/"                      # the token left the address bar
    page.goto(link)                                          # used up
    expect(page.locator('[data-testid="auth-needed"]')).to_contain_text("used or has expired")


def test_a_session_the_server_no_longer_knows_says_how_to_get_back(page: Any,
                                                                  tmp_path: Path) -> None:
    expect = playwright_expect()
    options = WebOptions(poll_interval_s=0.05, max_stream_s=0.5)   # streams reconnect often
    with StatusServer(MemoryStatusProvider(green()), options=options) as server:
        open_page(page, server)
        expect(page.locator("#indicator")).to_have_attribute("data-indicator", "green",
                                                             timeout=TIMEOUT_MS)
        # what an engine restart does to an open page: the cookie's secret is gone
        server.app.state.auth.session_secret = "a-new-run"
        banner = page.locator("#failure-banner")
        expect(banner).to_contain_text("tablesync sync page", timeout=TIMEOUT_MS)
        expect(page.locator("#indicator-label")).to_have_text("Signed out")
