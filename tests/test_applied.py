"""``Applied``: lazily built Change objects of the store's bulk path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.applied import Applied
from tablesync.engine import Engine
from tablesync.model import Change, Op, RowState, Version
from tablesync.project import Project, load_project
from tablesync.rows import state_from_row
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(ROOT / "sync.toml")


def _row(rid: str, hlc: int) -> dict[str, object]:
    return {"id": rid, "system_id": "system-a", "name": rid, "description": None,
            "created_at": None, "_ts_hlc": hlc, "_ts_origin": "B", "_ts_deleted": False,
            "_ts_base_hlc": 0, "_ts_base_origin": "", "_ts_seq": 1, "_ts_xid": 1}


def test_rows_become_the_changes_the_per_row_path_builds(project: Project) -> None:
    spec = project.table("projects")
    applied = Applied(spec)
    built = Change("projects", "x", Op.UPDATE, RowState(Version(1, "C")))
    applied.add_row("a", Op.INSERT, _row("a", 5))
    applied.append(built)
    applied.add_row("b", Op.UPDATE, _row("b", 6))
    assert len(applied) == 3 and applied.table == "projects"
    assert isinstance(applied._items[0], tuple)          # len() built nothing
    first = applied[0]
    assert first == Change("projects", "a", Op.INSERT, state_from_row(_row("a", 5), spec))
    assert dict(first.state.data) == {"id": "a", "system_id": "system-a", "name": "a",
                                      "description": None, "created_at": None}
    assert applied[0] is first                            # built once
    assert applied[1] is built and applied[-1].record_id == "b"
    assert applied[1:] == [built, applied[2]]
    assert [c.record_id for c in applied] == ["a", "x", "b"]
    assert applied == list(applied) and list(applied) == applied
    assert applied != [] and Applied(spec) == [] and Applied(spec) != "abc"


def test_engine_without_listeners_builds_nothing(project: Project, tmp_path: Path) -> None:
    store = LocalStore.open(project, tmp_path / "a.db", conflict_log=tmp_path / "c.log")
    engine = Engine(project, store=store)
    try:
        seen: list[Change] = []
        engine.on("tasks", seen.append)
        applied = store.apply_remote("projects", [_row("p1", 7), _row("p2", 8)])
        engine._notify(applied)                           # nobody listens to projects
        assert all(isinstance(item, tuple) for item in applied._items) and seen == []
        engine.on("projects", seen.append)
        engine._notify(applied)
        assert [c.record_id for c in seen] == ["p1", "p2"]
        assert seen[0].op is Op.INSERT and seen[1].state.version == Version(8, "B")
    finally:
        engine.close()
        store.close()
