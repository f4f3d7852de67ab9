"""Headless Chromium for the browser tests (Debian ``chromium`` driven by Playwright).

Outside CI a missing browser skips the tests; with ``CI=true`` it fails them, so a CI
machine without chromium cannot pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# Overridable only so tests/web/test_browser_gate.py can simulate a machine without it.
CHROMIUM = Path(os.environ.get("TABLESYNC_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run; .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator["Browser"]:
    """One headless Chromium per test module (a session-wide one kept playwright's event
    loop marked running in the main thread, breaking later tests that call asyncio.run)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is in the dev extra
        _unavailable("playwright is not installed: pip install -e .[dev]")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: "Browser") -> Iterator[Any]:
    """A fresh browser context and page per test."""
    context = chromium.new_context(viewport={"width": 1000, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()
