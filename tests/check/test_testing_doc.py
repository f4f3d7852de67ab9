"""docs/testing-your-sync.md is tested: its pytest file and the workflow's `pytest` and
`tablesync check` commands run on a copy of the sample config (the plugin loaded through
its `pytest11` entry point, as in a user's app: `make test` installs the package)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing-your-sync.md"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(ROOT / "sync.toml", app / "sync.toml")
    shutil.copytree(ROOT / "schemas", app / "schemas")
    return app


def test_the_documented_test_file_runs_in_an_app(tmp_path: Path) -> None:
    (source,) = [b for b in _blocks("python") if "tablesync_check" in b]
    name = source.splitlines()[0].removeprefix("# ").strip()
    app = _app(tmp_path)
    (app / name).write_text(source, encoding="utf-8")
    (workflow,) = _blocks("yaml")
    runs = [line.split("- run:", 1)[1].strip() for line in workflow.splitlines()
            if "- run:" in line]
    assert f"pytest {name}" in runs
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest",  # the plugin: its entry point
                          "-q", "-p", "no:cacheprovider", name], cwd=app, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout


def test_the_plugin_fails_the_test_with_the_script(tmp_path: Path) -> None:
    """A config whose server rule is broken fails the app's test with the readable
    counterexample (the fixture reports, it does not raise a traceback)."""
    app = _app(tmp_path)
    # A stand-in result (not a real run): a real failing run, with shrinking, takes ~45 s
    # and is tests/check/test_broken_rule.py; here only the fixture's failure path (the
    # report as the test's failure, no traceback) is checked.
    (app / "conftest.py").write_text('''
import pytest
from tablesync.check import pytest_plugin
from tablesync.check.runner import CheckResult


@pytest.fixture(autouse=True)
def _failing(monkeypatch):
    def fake(config, **kw):
        return CheckResult(ok=False, examples=3, steps=9, conflicts=0, superseded=0,
                           seconds=0.1, postgres="PostgreSQL 16.2", replicas=3, seed=None,
                           message="tasks 'w0-k0' differs", script=["replica a: sync"])
    monkeypatch.setattr(pytest_plugin, "run_check", fake)
''', encoding="utf-8")
    (app / "test_broken.py").write_text('''
import pytest


@pytest.mark.tablesync_check(config="sync.toml", examples=3)
def test_broken(tablesync_check):
    tablesync_check()
''', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest",  # the plugin: its entry point
                          "-q", "-p", "no:cacheprovider", "test_broken.py"], cwd=app, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Shortest failing sequence found (1 steps)" in out.stdout
    assert "1. replica a: sync" in out.stdout and "tasks 'w0-k0' differs" in out.stdout


def test_the_documented_command_runs(tmp_path: Path) -> None:
    (workflow,) = _blocks("yaml")
    (command,) = [line.split("- run:", 1)[1].strip() for line in workflow.splitlines()
                  if "- run: tablesync check" in line]
    args = command.split()[2:] + ["--examples", "3"]    # the documented run, smaller
    app = _app(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tablesync", "check", *args], cwd=app,
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = out.stdout.strip().splitlines()          # one line on success
    assert line.startswith("tablesync check: OK: 3 example(s)") and "PostgreSQL 16" in line
    assert (app / "sync-check.xml").exists()
