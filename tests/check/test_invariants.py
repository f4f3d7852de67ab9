"""The check's pure parts: the properties and the readable script."""

from __future__ import annotations

from tablesync.check.invariants import (LocalWrite, loser_version, lost_writes,
                                        row_differences, same_value, wrong_winners)
from tablesync.check.script import Script
from tablesync.model import ColumnSpec, DeletePolicy, RowState, TableSpec, Version

SPEC = TableSpec("tasks", (ColumnSpec("id", "TEXT", False), ColumnSpec("system_id", "TEXT")),
                 "id", "system_id", on_delete_conflict=DeletePolicy.LAST_WRITE_WINS)

SPEC_JSON = TableSpec("docs", (ColumnSpec("id", "TEXT", False), ColumnSpec("doc", "JSON")),
                      "id", "id")


def test_values_compare_in_wire_form() -> None:
    assert same_value(1.5, 1.50) and same_value(2, 2.0) and same_value(True, True)
    assert not same_value(True, 1) and not same_value("1", 1) and not same_value(None, "")
    assert row_differences(SPEC_JSON, {"id": "t", "doc": '""'}, {"id": "t", "doc": ""},
                           ["doc"]) == []
    assert row_differences(SPEC_JSON, {"id": "t", "doc": '"x"'}, {"id": "t", "doc": ""},
                           ["doc"]) == ["doc: replica '\"x\"' != server ''"]


def test_a_write_is_kept_when_final_seen_logged_or_parked() -> None:
    v1, v2 = Version(1, "a"), Version(2, "a")
    w1, w2 = LocalWrite("a", "tasks", "t1", v1, False, 1), LocalWrite("a", "tasks", "t1", v2,
                                                                     False, 2)
    final = {("tasks", "t1"): Version(3, "server")}
    assert lost_writes([w1, w2], final, set(), set(), set()) == [w1, w2]
    assert lost_writes([w1, w2], final, {("tasks", "t1", v1)}, {("tasks", "t1", v2)},
                       set()) == []
    assert lost_writes([w2], {("tasks", "t1"): v2}, set(), set(), set()) == []
    assert lost_writes([w2], final, set(), set(), {("a", "tasks", "t1")}) == []


def test_the_final_version_must_be_the_rules_maximum() -> None:
    old, new = RowState(Version(1, "a")), RowState(Version(2, "a"))
    accepted = {("tasks", "t1"): [new, old]}
    assert wrong_winners({"tasks": SPEC}, accepted, {("tasks", "t1"): new}) == []
    (problem,) = wrong_winners({"tasks": SPEC}, accepted, {("tasks", "t1"): old})
    assert "tasks 't1'" in problem and "winner" in problem


def test_conflict_entries_of_both_logs_give_the_losing_version() -> None:
    assert loser_version({"loser": {"version": [5, "a"]}}) == Version(5, "a")
    assert loser_version({"loser": {"_ts_hlc": 6, "_ts_origin": "b"}}) == Version(6, "b")
    assert loser_version({"loser": None}) is None


def test_the_script_numbers_steps_and_collapses_repeats() -> None:
    s = Script()
    s.add("replica a", "insert tasks 't1'")
    for _ in range(3):
        s.add("every replica", "syncs, in turn")
    s.add("replica a", "update tasks 't1'")
    assert s.collapsed() == ["replica a: insert tasks 't1'", "every replica: syncs, in turn (x3)",
                             "replica a: update tasks 't1'"]
    assert s.render().splitlines()[1] == "2. every replica: syncs, in turn (x3)"
