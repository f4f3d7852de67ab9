"""tablesync.sql.wire: local <-> wire conversions of the values docs/types.md lists."""

from __future__ import annotations

from tablesync.model import ColumnSpec, TableSpec
from tablesync.sql.wire import Codec, jsonb_text

TABLE = TableSpec("t", (ColumnSpec("id", "TEXT", False), ColumnSpec("r", "DOUBLE"),
                        ColumnSpec("n", "DECIMAL"), ColumnSpec("p", "DECIMAL(12, 2)"),
                        ColumnSpec("i", "BIGINT"), ColumnSpec("b", "VARBINARY"),
                        ColumnSpec("f", "BOOLEAN"), ColumnSpec("j", "JSONB")), "id", "id")


def test_a_numeric_beyond_64_bits_arrives_as_a_real() -> None:
    """Regression: Postgres stores a NUMERIC 1e300 with all its digits; the canonical value
    the apply function returned (and a pulled row) was a Python int SQLite cannot bind
    (OverflowError in the push's ack). SQLite's NUMERIC affinity stores that number's text
    as a real, so the local form is the float."""
    codec = Codec(TABLE)
    huge = 10 ** 300
    local = codec.to_local({"id": "x", "n": huge, "p": -huge, "r": huge, "i": 2 ** 63 - 1})
    assert local["n"] == 1e300 and type(local["n"]) is float
    assert local["p"] == -1e300 and local["r"] == 1e300
    assert local["i"] == 2 ** 63 - 1 and type(local["i"]) is int      # in range: untouched
    small = codec.to_local({"id": "x", "n": 2 ** 63 - 1, "p": 12})
    assert small["n"] == 2 ** 63 - 1 and type(small["n"]) is int


def test_the_other_conversions_both_ways() -> None:
    codec = Codec(TABLE)
    wire = codec.to_wire({"id": "x", "b": b"\x00\xff", "f": 1, "j": 42})
    assert wire == {"id": "x", "b": "\\x00ff", "f": True, "j": "42"}
    local = codec.to_local({"id": "x", "b": "\\x00ff", "f": False, "j": {"a": [1, "ü"]}})
    assert local == {"id": "x", "b": b"\x00\xff", "f": 0, "j": '{"a": [1, "ü"]}'}
    assert jsonb_text({"k": None, "l": [True, 1.5]}) == '{"k": null, "l": [true, 1.5]}'


UUID_KEYED = TableSpec("u", (ColumnSpec("id", "UUID", False), ColumnSpec("v", "TEXT")),
                       "id", "id")
SPELLINGS = ["3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "3F2B8C1E-9A4D-4E6F-8B7A-1C2D3E4F5A6B",
             "{3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b}", "3f2b8c1e9a4d4e6f8b7a1c2d3e4f5a6b",
             "3F2b8C1e-9A4d-4E6f-8B7a-1C2d3E4f5A6b"]


def test_a_uuid_key_is_refused_exactly_when_postgres_would_store_another_text(
        pg_dsn: str) -> None:
    """The canonical form is Postgres' own (asked here), and only the key column counts."""
    import psycopg

    codec = Codec(UUID_KEYED)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for spelling in SPELLINGS:
            (stored,) = conn.execute("SELECT %s::uuid::text", (spelling,)).fetchone()
            why = codec.key_problem({"id": spelling, "v": "x"})
            if stored == spelling:
                assert why is None
            else:
                assert why is not None and repr(stored) in why and "'id'" in why, why
    assert codec.key_problem({"id": "not a uuid"}) is None      # the server's 22P02 says why
    assert Codec(TABLE).key_problem({"id": "ABC"}) is None       # a TEXT key: as written
