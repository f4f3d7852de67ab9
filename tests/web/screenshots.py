"""Regenerate the status page screenshots in ``docs/img/`` (shown in docs/operations.md)::

    python -m tests.web.screenshots            # from the repository root, dev venv

Each state of ``tests/web/states.py`` is shown by a fresh status server with a
:class:`MemoryStatusProvider` in headless Chromium (``/usr/bin/chromium`` through
Playwright, as the browser tests), logged in through a one-time link; plus the page as
it looks without a login. Not a test module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tablesync.web import MemoryStatusProvider, StatusServer, WebOptions
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.states import STATES, green

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img"
VIEWPORT = {"width": 1000, "height": 800}
TIMEOUT_MS = 10_000


def main(out: Path = OUT) -> list[Path]:
    """Write ``status-<state>.png`` for every state and ``status-auth-required.png``."""
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for name, (setup, ready) in STATES.items():
                provider = MemoryStatusProvider(green())
                with StatusServer(provider, options=WebOptions(poll_interval_s=0.05)) as server:
                    context = browser.new_context(viewport=VIEWPORT)
                    page = context.new_page()
                    page.goto(server.login_link())
                    setup(provider)
                    expect(page.locator(ready).first).to_be_visible(timeout=TIMEOUT_MS)
                    page.wait_for_timeout(300)      # the parked/conflict fetches settle
                    written.append(out / f"status-{name}.png")
                    page.screenshot(path=str(written[-1]), full_page=True)
                    context.close()
            with StatusServer(MemoryStatusProvider(green())) as server:
                context = browser.new_context(viewport={"width": 1000, "height": 420})
                page = context.new_page()
                page.goto(server.url + "/")
                written.append(out / "status-auth-required.png")
                page.screenshot(path=str(written[-1]), full_page=True)
                context.close()
        finally:
            browser.close()
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
