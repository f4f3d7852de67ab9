"""Browser tests must fail, not skip, in CI when chromium is missing (and skip elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_browser_test(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["TABLESYNC_TEST_CHROMIUM"] = "/nonexistent/chromium"
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/web/test_browser.py", "-k", "sync_now"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_missing_chromium_fails_in_ci() -> None:
    result = _run_browser_test("true")
    assert result.returncode != 0, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert "CI=true: browser tests must run" in result.stdout


@pytest.mark.slow
def test_missing_chromium_skips_outside_ci() -> None:
    result = _run_browser_test(None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout, result.stdout
