"""The apply function's canonical values and data errors (docs/types.md), on both paths:
the set-based one (a batch of distinct complete rows) and the per-row one (forced by a
repeated primary key), as the superuser (no RLS: the values are the point here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tablesync.project import load_project
from tablesync.sql import postgres



pytestmark = pytest.mark.postgres

SCHEMA = ('CREATE TABLE "T t" ("ID" TEXT PRIMARY KEY, "user" TEXT NOT NULL, at TIMESTAMP, '
          'doc JSON, flag BOOLEAN, n INTEGER, note TEXT);')
COLS = ("ID", "user", "at", "doc", "flag", "n", "note")


def _row(rid: str, hlc: int, **values: Any) -> dict[str, Any]:
    row = {c: None for c in COLS}
    row.update({"ID": rid, "user": "s", **values, "_ts_hlc": hlc, "_ts_origin": "s",
                "_ts_deleted": False, "_ts_base_hlc": 0, "_ts_base_origin": ""})
    return row


@pytest.mark.parametrize("per_row", [False, True])
def test_canonical_values_and_data_errors(pg_dsn: str, tmp_path: Path, per_row: bool,
                                          apply: Any) -> None:
    import psycopg

    (tmp_path / "t.sql").write_text(SCHEMA)
    (tmp_path / "sync.toml").write_text(
        '[system]\nid = "s"\n[paths]\nschemas = "."\n'
        '[tables."T t"]\nschema = "t.sql"\nprimary_key = "ID"\nscope = "user"\n')
    project = load_project(tmp_path / "sync.toml")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
        rows = [_row("a", 1 << 20, at="2024-01-01T10:00:00+05:00", doc='{"b":1,"a":2}',
                     flag="yes", n=2 ** 40),
                _row("b", 1 << 20, at="2024-01-01T10:00:00", doc='{"a": 2, "b": 1}',
                     flag=True, n=1)]
        if per_row:                      # a repeated key: the per-row path decides
            rows.append(dict(rows[1]))
        out = apply(conn, "T t", rows)
        assert [o["outcome"] for o in out][:2] == ["applied", "applied"]
        assert out[0]["row"] == {"at": "2024-01-01T10:00:00", "doc": {"a": 2, "b": 1},
                                 "flag": True}
        assert out[1]["row"] is None     # already canonical: nothing returned
        if per_row:
            assert out[2]["outcome"] == "duplicate" and out[2]["row"] is None
        bad = apply(conn, "T t", [_row("c", 1 << 20, doc="not json"),
                                       _row("d", 1 << 20, at="2024-02-30 10:00"),
                                       _row("e", 1 << 20, n="ten"),
                                       _row("f", 1 << 20, note="fine")])
        assert [o["outcome"] for o in bad] == ["error", "error", "error", "applied"]
        assert all(o["message"].startswith("22") for o in bad[:3]), bad
        (n,) = conn.execute('SELECT n FROM "T t" WHERE "ID" = \'a\'').fetchone()
        assert n == 2 ** 40
