"""tablesync.conflicts: the JSON lines conflict log is private (0600), even one an older
version left readable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tablesync.conflicts import write_conflict_log

ENTRY = {"table": "tasks", "record_id": "1", "winner": {"title": "b"},
         "loser": {"title": "a"}, "reason": "newer", "resolved_at": "2026-12-01 00:00:00"}


def test_the_conflict_log_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "conflicts.log"
    old = os.umask(0o022)                     # the usual umask would give 0644
    try:
        write_conflict_log(path, [ENTRY])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_conflict_log(path, [ENTRY])
    assert [json.loads(line)["record_id"] for line in path.read_text().splitlines()] == ["1", "1"]


def test_a_readable_log_is_tightened_on_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "conflicts.log"
    path.write_text("")
    path.chmod(0o644)
    write_conflict_log(path, [ENTRY])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_to_write_touches_nothing(tmp_path: Path) -> None:
    write_conflict_log(tmp_path / "c.log", [])
    write_conflict_log(None, [ENTRY])
    assert not (tmp_path / "c.log").exists()
