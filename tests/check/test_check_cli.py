"""Issue 17: `tablesync check` on the sample config and on the awkward fixture (a real
PostgreSQL started by the command itself, as a user's CI would run it)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


def check(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tablesync", "check", "--config", str(config),
                           *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=240)


def test_check_passes_on_awkward_types_and_names(tmp_path: Path) -> None:
    """Reserved words, mixed case and spaces as names; BLOB, JSON, REAL, NUMERIC, UUID,
    dates and times; a CHECK constraint; a self-referencing foreign key. (The sample
    sync.toml runs through the documented CI command: tests/check/test_testing_doc.py.)"""
    config = ROOT / "tests" / "fixtures" / "awkward" / "sync.toml"
    out = check(config, tmp_path, "--examples", "5", "--seed", "1", "--junit", "report.xml")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith("tablesync check: OK: 5 example(s)")
    assert "3 replicas" in lines[0] and "against PostgreSQL 16" in lines[0]
    suite = ET.parse(tmp_path / "report.xml").getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"


def test_a_bad_config_is_an_error_naming_the_file(tmp_path: Path) -> None:
    out = check(tmp_path / "missing.toml", tmp_path)
    assert out.returncode != 0
    assert "missing.toml" in out.stdout + out.stderr
