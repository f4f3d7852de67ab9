"""Playwright page helpers shared by the browser tests (not a test module).

Imported as ``pages`` (``tests/web/`` is on ``sys.path`` while pytest collects it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tablesync.web import StatusServer


def playwright_expect() -> Any:
    """Playwright's ``expect``, imported only when a browser test runs."""
    from playwright.sync_api import expect

    return expect


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    """Save a full-page screenshot ``<tmp_path>/<name>.png`` and check it is not empty."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def open_page(page: Any, server: StatusServer) -> None:
    """Open the status page; its console and page errors collect in ``page.errors``."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server.login_link())          # the one-time link sets the cookie, then "/"
    assert page.url == server.url + "/", page.url
    page.evaluate("window.__noReload = 'same page'")
    page.errors = errors
