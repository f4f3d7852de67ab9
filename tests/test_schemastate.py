"""The state file's diff (pure): steps, removed tables, notes, refusals, --accept-manual."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.errors import GenerateError
from tablesync.project import Project, load_project
from tablesync.schemastate import Diff, Step, diff, dumps, loads, snapshot

NOTES = "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, body TEXT);"
LABELS = ("CREATE TABLE labels (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, "
          "note_id TEXT);")


def _project(root: Path, schemas: dict[str, str], extra: str = "") -> Project:
    (root / "schemas").mkdir(parents=True, exist_ok=True)
    toml = ['[system]\nid = "s"\n']
    for name, sql in schemas.items():
        (root / "schemas" / f"{name}.sql").write_text(sql)
        toml.append(f'[tables.{name}]\nschema = "{name}.sql"\n{extra}')
    (root / "sync.toml").write_text("\n".join(toml))
    return load_project(root / "sync.toml")


def _diff(tmp: Path, old: dict[str, str], new: dict[str, str], extra: str = "",
          accept: bool = False) -> Diff:
    before = snapshot(_project(tmp / "a", old), "g")
    project = _project(tmp / "b", new, extra)
    return diff(loads(dumps(before), "state"), snapshot(project, "g"), project,
                accept=accept)


def test_no_state_is_init_and_no_change_is_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path, {"notes": NOTES})
    assert diff(None, snapshot(project, "g"), project).steps == [Step("init")]
    d = _diff(tmp_path, {"notes": NOTES}, {"notes": NOTES})
    assert (d.steps, d.removed, d.refused, d.notes) == ([], [], [], [])


def test_steps_in_push_order(tmp_path: Path) -> None:
    child = LABELS.replace("note_id TEXT", "note_id TEXT REFERENCES notes (id)")
    d = _diff(tmp_path, {"notes": NOTES},
              {"notes": NOTES.replace("body TEXT", "body TEXT, a TEXT, b INTEGER DEFAULT 1"),
               "labels": child})
    assert d.steps == [Step("add_column", "notes", ("a", "b")),
                       Step("add_table", "labels")]


def test_removed_table_and_foreign_key_note(tmp_path: Path) -> None:
    d = _diff(tmp_path, {"notes": NOTES, "labels": LABELS}, {"notes": NOTES})
    assert d.removed == ["labels"] and d.steps == []
    d = _diff(tmp_path, {"notes": NOTES, "labels": LABELS},
              {"notes": NOTES, "labels": LABELS.replace(
                  "note_id TEXT", "note_id TEXT REFERENCES notes (id)")})
    assert d.steps == []
    assert d.notes and "foreign keys of labels changed" in d.notes[0]


def test_policy_change_re_creates_the_table_objects(tmp_path: Path) -> None:
    d = _diff(tmp_path, {"notes": NOTES}, {"notes": NOTES},
              'on_delete_conflict = "last-write-wins"\n')
    assert d.steps == [Step("update_table", "notes")]


def test_accept_turns_a_refusal_into_the_rest_of_the_steps(tmp_path: Path) -> None:
    dropped = "CREATE TABLE notes (id TEXT PRIMARY KEY, system_id TEXT NOT NULL);"
    d = _diff(tmp_path, {"notes": NOTES}, {"notes": dropped})
    assert d.steps == [] and "notes.body: column dropped" in d.refused[0]
    d = _diff(tmp_path, {"notes": NOTES}, {"notes": dropped}, accept=True)
    assert d.steps == [Step("update_table", "notes")]


@pytest.mark.parametrize("text, message", [
    ("{", "not a tablesync state file"),
    ('{"format": 1}', "no 'tables' object"),
    ('{"format": 99, "tables": {}}', "state format 99 is not 1"),
])
def test_unreadable_state_is_refused(text: str, message: str) -> None:
    with pytest.raises(GenerateError, match=message):
        loads(text, "supabase/tablesync-schema.json")
