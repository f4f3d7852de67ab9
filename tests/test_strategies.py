"""tablesync.strategies: the schema-derived strategies really draw the edge values, respect
NOT NULL, lengths, keys and foreign keys, and their rows insert into the replica's SQLite."""

from __future__ import annotations

import math
import sqlite3
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tablesync import strategies as S
from tablesync.errors import ConfigError, TablesyncError
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
# a failing search reprs what it drew: the 10 MB text and the 64 KiB blob (expected, not a problem)
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PARSED = parse_schema(SCHEMA, "odd.sql")
TABLE = TableSpec(PARSED.name, PARSED.columns, "id", "owner",
                  foreign_keys=PARSED.foreign_keys)


def col(name: str) -> ColumnSpec:
    return TABLE.column(name)


class _Found(Exception):
    pass


def draws(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool],
          max_examples: int = 300) -> bool:
    """Whether ``strategy`` draws a value meeting ``condition`` within ``max_examples``
    draws (generation only: no shrinking of what was found, unlike ``hypothesis.find``)."""
    @settings(max_examples=max_examples, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def search(value: Any) -> None:
        if condition(value):
            raise _Found

    try:
        search()
    except _Found:
        return True
    return False


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
    assert not draws(S.values(col(name)), condition, max_examples=100)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_10_mb_text_only_when_big() -> None:
    big = lambda v: isinstance(v, str) and len(v.encode()) == S.BIG_TEXT_BYTES  # noqa: E731
    assert draws(S.values(col("body"), big=True), big)
    assert not draws(S.values(col("body"), hostile=True), big, max_examples=100)
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


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow], deadline=None)
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
    with pytest.raises(ConfigError, match="child column p"):
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


def test_edge_values_respect_declared_sizes() -> None:
    assert all(len(v) <= 3 for v in S.edge_values(col("short")))
    assert "" in S.edge_values(col("short")) and "a" in S.edge_values(col("short"))
    assert all(abs(v) < 10 ** 4 for v in S.edge_values(col("amount")))
    assert 9999 in S.edge_values(col("amount")) and 1.234 in S.edge_values(col("amount"))
    assert "2024-02-30" in S.edge_values(col("day"), hostile=True)
    assert "2024-02-30" not in S.edge_values(col("day"))


def test_hostile_rows_spoil_one_or_two_columns_of_a_valid_row() -> None:
    small = TableSpec("small", tuple(col(c) for c in ("id", "owner", "parent", "day", "body")),
                      "id", "owner", foreign_keys=PARSED.foreign_keys)
    spoiled = S.rows(small, hostile=True, fixed={"owner": "sys-a"},
                     references={"parent": ["p1"]})
    assert draws(spoiled, lambda r: r.get("day") == "2024-02-30")
    assert draws(spoiled, lambda r: isinstance(r.get("body"), S.RawText))
    assert not draws(S.rows(small, fixed={"owner": "sys-a"}),
                     lambda r: r.get("day") == "2024-02-30", max_examples=150)

    @settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(spoiled)
    def keys_fixed_and_references_stay_valid(row: dict[str, Any]) -> None:
        assert row["owner"] == "sys-a" and isinstance(row["id"], str) and row["id"]
        assert row.get("parent") in (None, "p1")

    keys_fixed_and_references_stay_valid()


def test_update_sets_every_column_but_the_key_and_stores_raw_text_as_text() -> None:
    db = sqlite3.connect(":memory:")
    db.text_factory = bytes
    db.execute(sqlite_sql.table_sql(PARSED.ddl))
    db.execute(*S.insert(TABLE, {"id": "k'1", "owner": "a", "body": "x"}))
    db.execute(*S.update(TABLE, {"id": "k'1", "body": S.RawText(b"\xff"), "n": 5}))
    assert db.execute('SELECT body, typeof(body), n FROM "Odd Table"').fetchone() == \
        (b"\xff", b"text", 5)
    with pytest.raises(TablesyncError, match="Odd Table"):
        S.update(TABLE, {"id": "k'1"})
