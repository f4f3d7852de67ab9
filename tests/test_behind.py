"""tablesync.behind: which errors mean "the server lacks this", naming every missing column,
one log line per table, re-probing only when due, and pulled rows without such columns.

The probe here is a plain function answering like PostgREST (codes and messages as the
devserver and hosted PostgREST give them); the real HTTP path is covered by
tests/reliability/test_adoption.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pytest

from tablesync.behind import ServerSchema, partial_rows
from tablesync.errors import RemoteError, TransientRemoteError
from tablesync.project import load_project
from tablesync.remote.base import error_for_status, server_behind

ROOT = Path(__file__).resolve().parent.parent
TABLES = load_project(ROOT / "sync.toml").tables


def test_postgrest_answers_are_classified() -> None:
    def err(status: int, code: str, message: str) -> RemoteError:
        return error_for_status(status, {"code": code, "message": message}, where="probe t")

    assert server_behind(err(404, "PGRST205", "Could not find the table 'public.results' "
                                              "in the schema cache")) == ("table", None)
    assert server_behind(err(404, "42P01", 'relation "public.results" does not exist')) == (
        "table", None)
    assert server_behind(err(404, "PGRST202", "Could not find the function")) == ("table", None)
    assert server_behind(err(400, "42703", "column tasks.notes does not exist")) == (
        "column", "notes")
    assert server_behind(err(400, "PGRST204", "Could not find the 'notes' column of 'tasks' "
                                              "in the schema cache")) == ("column", "notes")
    assert server_behind(err(400, "23505", "duplicate key")) is None
    assert server_behind(TransientRemoteError("network error")) is None


class Server:
    """Answers probes like PostgREST for a schema given as table -> columns."""

    def __init__(self, tables: dict[str, set[str]]) -> None:
        self.tables = tables
        self.calls = 0

    def __call__(self, table: str, columns: Sequence[str]) -> None:
        self.calls += 1
        if table not in self.tables:
            raise error_for_status(404, {"code": "PGRST205", "message": "no table"}, where="p")
        for c in columns:
            if c not in self.tables[table]:
                raise error_for_status(400, {"code": "42703",
                                             "message": f"column {table}.{c} does not exist"},
                                       where="p")


def _full(name: str) -> set[str]:
    spec = next(t for t in TABLES if t.name == name)
    return {*spec.column_names, "_ts_hlc", "_ts_origin", "_ts_deleted", "_ts_base_hlc",
            "_ts_base_origin", "_ts_seq", "_ts_xid"}


def test_held_once_named_then_released(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    server = Server({"projects": _full("projects"),
                     "tasks": _full("tasks") - {"payload", "priority"}})
    schema = ServerSchema(TABLES, server, reprobe_s=30, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tablesync"):
        schema.check()
        assert schema.held_tables == {"tasks", "results"}
        assert schema.missing_columns("tasks") == {"payload", "priority"}
        assert schema.held["results"].missing_table
        calls = server.calls
        schema.check()                          # not due: no request
        assert server.calls == calls
        now[0] = 31
        schema.check()                          # due: held tables probed again, no new line
        assert server.calls > calls
        server.tables["tasks"] = _full("tasks")
        schema.recheck()
        schema.check()
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "are held" in m]) == 2
    assert any("tasks lacks column(s) priority, payload" in m or
               "tasks lacks column(s) payload, priority" in m for m in lines)
    assert [m for m in lines if "caught up" in m] == [
        "engine: the server has caught up with table tasks: pushing its held changes"]
    assert schema.held_tables == {"results"}
    assert "results" in schema.reasons()["results"]


def test_rows_pulled_without_a_column_the_server_lacks_are_kept() -> None:
    tasks = next(t for t in TABLES if t.name == "tasks")
    schema = ServerSchema(TABLES, Server({"tasks": _full("tasks") - {"payload"}}))
    row = {"id": "t1", "system_id": "system-a", "project_id": None, "title": "x",
           "status": "pending", "priority": 0, "updated_at": None, "_ts_hlc": 1 << 16,
           "_ts_origin": "server", "_ts_deleted": False, "_ts_base_hlc": 0,
           "_ts_base_origin": "", "_ts_seq": 3, "_ts_xid": 1}
    bad = {**row, "id": "t2", "title": 5}       # refused for another reason: stays refused
    cut = {"id": "t3", "_ts_seq": 4}            # an oversized row cut to its key: refused
    assert partial_rows(schema, tasks, [row]) == ([], [])      # not known to be missing
    schema.check()
    assert schema.missing_columns("tasks") == {"payload"}
    rows, taken = partial_rows(schema, tasks, [row, bad, cut])
    assert rows == [row] and taken == [0]
