"""postgres_changes data built from captured changes (pure)."""

from __future__ import annotations

import json

from tablesync.devserver.realtime_capture import TableInfo
from tablesync.devserver.realtime_changes import (
    MAX_RECORD_BYTES, build_data, filter_columns, parse_change)

INFO = TableInfo(1, "public", "todos", True, ("id",), ("id",),
                 (("id", "int8"), ("title", "text"), ("secret", "text")))
ALL = frozenset({"id", "title", "secret"})


def _change(kind: str, record: object, old: object) -> str:
    return json.dumps({"id": 1, "schema": "public", "table": "todos", "type": kind,
                       "commit_timestamp": "2026-01-01T00:00:00.000Z",
                       "record": record, "old": old})


def test_insert_update_delete_key_presence() -> None:
    row = {"id": 1, "title": "t", "secret": "s"}
    ins = build_data(parse_change(_change("INSERT", row, None)), INFO, ALL)
    assert ins["record"] == row and "old_record" not in ins and ins["errors"] is None
    upd = build_data(parse_change(_change("UPDATE", row, row)), INFO, ALL)
    assert upd["old_record"] == {"id": 1}
    dele = build_data(parse_change(_change("DELETE", None, row)), INFO, ALL)
    assert "record" not in dele and dele["old_record"] == {"id": 1}


def test_column_privileges_and_delete_identity() -> None:
    row = {"id": 1, "title": "t", "secret": "s"}
    data = build_data(parse_change(_change("INSERT", row, None)), INFO,
                      frozenset({"id", "title"}))
    assert data["record"] == {"id": 1, "title": "t"}
    assert [c["name"] for c in data["columns"]] == ["id", "title"]
    full = TableInfo(1, "public", "todos", False, ("id",), ("id", "title", "secret"),
                     INFO.columns)
    change = parse_change(_change("DELETE", None, row))
    assert build_data(change, full, ALL)["old_record"] == row  # no RLS: full identity
    assert filter_columns(change, full) == row


def test_errors_400_401_413() -> None:
    row = {"id": 1, "title": "t", "secret": "s"}
    no_pk = TableInfo(1, "public", "todos", True, (), (), INFO.columns)
    data = build_data(parse_change(_change("INSERT", row, None)), no_pk, ALL)
    assert data == {"schema": "public", "table": "todos", "type": "INSERT",
                    "errors": ["Error 400: Bad Request, no primary key"]}
    data = build_data(parse_change(_change("INSERT", row, None)), INFO, frozenset({"title"}))
    assert data["errors"] == ["Error 401: Unauthorized"]
    big = {"id": 1, "title": "t", "secret": "x" * (MAX_RECORD_BYTES + 1)}
    data = build_data(parse_change(_change("INSERT", big, None)), INFO, ALL)
    assert data["errors"] == ["Error 413: Payload Too Large"]
    assert data["record"] == {"id": 1, "title": "t"}
