"""tablesync.strategies: the schema-derived strategies really draw the edge values, respect
NOT NULL, lengths, keys and foreign keys, and their rows insert into the replica's SQLite."""

from __future__ import annotations

import math
import sqlite3
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import find, strategies as st
from hypothesis.errors import NoSuchExample

from tablesync import strategies as S
from tablesync.model import ColumnSpec, ForeignKey, TableSpec
from tablesync.sql import sqlite as sqlite_sql
from tablesync.sql.parse import parse_schema

SCHEMA = """CREATE TABLE "Odd Table" (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    parent TEXT REFERENCES "Odd Table" (id),
    n INTEGER NOT NULL DEFAULT 0,
    r REAL,
    amount NUMERIC(6, 2),
    num NUMERIC,
    short VARCHAR(3),
    body TEXT,
    bin BLOB,
    flag BOOLEAN,
    day DATE,
    at TIMESTAMP,
    at_tz TIMESTAMPTZ,
    t TIME,
    doc JSONB,
    uid UUID
);
"""
# find() reprs what it found: the 10 MB text and the 64 KiB blob (expected, not a problem)
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PARSED = parse_schema(SCHEMA, "odd.sql")
TABLE = TableSpec(PARSED.name, PARSED.columns, "id", "owner",
                  foreign_keys=PARSED.foreign_keys)


def col(name: str) -> ColumnSpec:
    return TABLE.column(name)


def draws(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool]) -> bool:
    """Whether ``strategy`` draws a value meeting ``condition`` (bounded search)."""
    try:
        find(strategy, condition, settings=settings(max_examples=400, database=None,
                                                    suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        return False
    return True


def test_column_types_follow_the_type_map() -> None:
    kinds = {c.name: S.column_type(c).kind for c in TABLE.columns}
    assert kinds == {
        "id": S.Kind.TEXT, "owner": S.Kind.TEXT, "parent": S.Kind.TEXT,
        "n": S.Kind.INTEGER, "r": S.Kind.REAL, "amount": S.Kind.NUMERIC,
        "num": S.Kind.NUMERIC, "short": S.Kind.TEXT, "body": S.Kind.TEXT,
        "bin": S.Kind.BLOB, "flag": S.Kind.BOOLEAN, "day": S.Kind.DATE,
        "at": S.Kind.TIMESTAMP, "at_tz": S.Kind.TIMESTAMPTZ, "t": S.Kind.TIME,
        "doc": S.Kind.JSON, "uid": S.Kind.UUID}
    assert S.column_type(col("amount")) == S.ColumnType(S.Kind.NUMERIC, precision=6, scale=2)
    assert S.column_type(col("short")).length == 3


@pytest.mark.parametrize("name, condition", [
    ("n", lambda v: v == 2 ** 63 - 1),
    ("n", lambda v: v == -(2 ** 63 - 1)),
    ("r", lambda v: isinstance(v, float) and v == 0 and math.copysign(1, v) < 0),
    ("r", lambda v: v == 1e-300),
    ("body", lambda v: isinstance(v, str) and "👩‍👩‍👧‍👦" in v),
    ("body", lambda v: isinstance(v, str) and "שלום" in v),
    ("body", lambda v: v == ""),
    ("bin", lambda v: v == b""),
    ("bin", lambda v: isinstance(v, bytes) and len(v) >= S.LARGE_BLOB_BYTES),
    ("day", lambda v: v == "2024-02-29"),
    ("at_tz", lambda v: isinstance(v, str) and v.endswith("+05:45")),
    ("doc", lambda v: isinstance(v, str) and v.count("[") >= 5),
    ("doc", lambda v: isinstance(v, str) and v.startswith("{") and "{" in v[1:]),
    ("uid", lambda v: isinstance(v, str) and v != v.lower()),
])
def test_valid_values_include_the_edge_values(name: str, condition: Callable[[Any], bool]
                                              ) -> None:
    assert draws(S.values(col(name)), condition)


@pytest.mark.parametrize("name, condition", [
    ("r", lambda v: isinstance(v, float) and math.isnan(v)),
    ("r", lambda v: v == float("inf")),
    ("r", lambda v: v == float("-inf")),
    ("body", lambda v: isinstance(v, str) and "\x00" in v),
    ("body", lambda v: isinstance(v, S.RawText) and not _utf8(v)),
    ("body", lambda v: type(v) is bytes),
    ("day", lambda v: v == "2024-02-30"),
    ("doc", lambda v: v == "not json"),
    ("n", lambda v: v == "abc"),
])
def test_hostile_values_include_what_a_careless_app_writes(
        name: str, condition: Callable[[Any], bool]) -> None:
    assert draws(S.values(col(name), hostile=True), condition)
    assert not draws(S.values(col(name)), condition)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_10_mb_text_only_when_big() -> None:
    big = lambda v: isinstance(v, str) and len(v.encode()) == S.BIG_TEXT_BYTES  # noqa: E731
    assert draws(S.values(col("body"), big=True), big)
    assert not draws(S.values(col("body"), hostile=True), big)
    text = S.big_text()
    assert "👩" in text and "ש" in text and len(text.encode()) == S.BIG_TEXT_BYTES
    assert draws(S.values(col("bin"), big=True), lambda v: v == S.big_blob())


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(S.values(col("short")), S.values(col("amount")), S.values(col("n")),
       S.values(col("doc"), edge=False), S.values(col("day")))
def test_valid_values_respect_lengths_precision_and_not_null(
        short: Any, amount: Any, n: Any, doc: Any, day: Any) -> None:
    import json
    assert short is None or len(short) <= 3
    assert amount is None or abs(amount) < 10 ** 4
    assert n is not None and -2 ** 63 <= n <= 2 ** 63 - 1
    assert doc is None or json.loads(doc) is not None or doc == "null"
    assert day is None or isinstance(day, str)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_rows_respect_keys_fixed_columns_and_foreign_keys(data: st.DataObject) -> None:
    parents = ["p1", "p2"]
    rows = data.draw(S.unique_rows(TABLE, min_size=1, max_size=5, fixed={"owner": "sys-a"},
                                   references={"parent": parents}))
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["owner"] == "sys-a" and row["id"]
        assert row.get("parent") in (None, *parents)
        assert "n" not in row or row["n"] is not None      # NOT NULL DEFAULT: left out or set


def test_a_not_null_foreign_key_needs_its_parents() -> None:
    table = TableSpec("child", (ColumnSpec("id", "TEXT", False),
                                ColumnSpec("p", "TEXT", False)), "id", "id",
                      foreign_keys=(ForeignKey(("p",), "parent", ("id",)),))
    with pytest.raises(ValueError, match="child column p"):
        S.rows(table)
    assert draws(S.rows(table, references={"p": ["x"]}), lambda r: r["p"] == "x")


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(S.rows(TABLE, hostile=True, fixed={"owner": "sys-a"}))
def test_hostile_rows_insert_into_the_replica_table(row: dict[str, Any]) -> None:
    """Everything drawn is something an app can write through plain sqlite3 (the property
    test on the real stack relies on it); RawText lands as TEXT, not as a BLOB."""
    db = sqlite3.connect(":memory:")
    db.text_factory = bytes
    db.execute(sqlite_sql.table_sql(PARSED.ddl))
    sql, params = S.insert(TABLE, row)
    db.execute(sql, params)
    stored = db.execute('SELECT typeof(body) FROM "Odd Table"').fetchone()
    if isinstance(row.get("body"), S.RawText):
        assert stored == (b"text",)
    db.close()
