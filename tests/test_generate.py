"""generate: artefacts, --check, the committed JSON Schema, executing sqlite.sql."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tablesync.generate import (SCHEMA_FILE, artifacts, generate, realtime_subscriptions, stale,
                                write)
from tablesync.config import json_schema
from tablesync.project import load_project

ROOT = Path(__file__).resolve().parent.parent


def test_committed_json_schema_is_up_to_date() -> None:
    committed = json.loads((ROOT / "schemas" / SCHEMA_FILE).read_text())
    assert committed == json_schema(), "run `tablesync generate` and commit schemas/"


def test_artifacts_and_check(tmp_path: Path) -> None:
    project = load_project(ROOT / "sync.toml")
    arts = [a for a in artifacts(project, tmp_path / "out") if a.path.suffix != ".json"
            or a.path.name == "realtime.json"]
    assert {a.path.name for a in arts} == {"sqlite.sql", "supabase.sql", "realtime.json"}
    assert stale(arts) == [a.path for a in arts]
    assert write(arts) == [a.path for a in arts]
    assert stale(arts) == [] and write(arts) == []
    (tmp_path / "out" / "sqlite.sql").write_text("-- edited\n")
    assert stale(arts) == [tmp_path / "out" / "sqlite.sql"]


def test_realtime_subscriptions() -> None:
    project = load_project(ROOT / "sync.toml")
    subs = realtime_subscriptions(project)
    assert subs[1] == {"event": "*", "schema": "public", "table": "tasks",
                       "filter": "system_id=eq.system-a"}
    assert [s["table"] for s in subs] == ["projects", "tasks", "results"]


def test_sqlite_sql_runs_twice_in_sqlite3(tmp_path: Path) -> None:
    project = load_project(ROOT / "sync.toml")
    text = artifacts(project, tmp_path)[0].text
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.executescript(text)
    conn.executescript(text)
    conn.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t', 'system-a', 'x')")
    assert conn.execute("SELECT operation, record_id FROM sync_queue").fetchall() == [
        ("INSERT", "t")]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_generate_writes_what_the_cli_writes(tmp_path: Path) -> None:
    """``tablesync.generate(project, out)``: the public entry point (no local migration)."""
    import tablesync

    assert tablesync.generate is generate
    project = load_project(ROOT / "sync.toml")
    out = tmp_path / "out"
    expected = [a for a in artifacts(project, out) if a.path.parent == out]
    changed = generate(project, out)
    assert set(changed) >= {a.path for a in expected}
    assert all(a.path.read_text(encoding="utf-8") == a.text for a in expected)
    assert generate(project, out) == []
