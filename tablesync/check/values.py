"""Values an app would validly write into a column, by its declared type (docs/types.md).

A small, self-contained stand-in for the data-fidelity strategies: values in the local
(SQLite) form the app writes, short, and within the type (text within a VARCHAR/CHAR
length, integers within SMALLINT/BIGINT, reals exactly representable, valid dates, times,
JSON and UUIDs, bytes for BLOB, 0/1 for BOOLEAN). A CHECK or UNIQUE constraint the
declaration carries is not modelled: SQLite refuses such a write and the check records
it as refused by the app's database, as the app would see it.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, time, timezone
from typing import Any

from hypothesis import strategies as st

from tablesync.model import ColumnSpec
from tablesync.sql.base import pg_type

__all__ = ["column_values", "key_value", "kind_of"]

# mostly readable text, with quotes, spaces and a few multi-byte characters
_ALPHABET = "abcdefxyzABC0123 '\"%_\\é日😀"
_TEXT = st.text(alphabet=_ALPHABET, max_size=10)
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000)
                     | st.text(max_size=5, alphabet="abc é\"'"),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4, alphabet="abkz"), inner, max_size=3),
                     max_leaves=6)


def kind_of(col: ColumnSpec) -> str:
    """The column's Postgres type family (``BIGINT``, ``TEXT``, ``NUMERIC``...)."""
    try:
        pg = pg_type(col.type).upper() if col.type.strip() else "TEXT"
    except Exception:  # noqa: BLE001 - a type only sqlglot's rendering knows: as text
        return "TEXT"
    return pg.split("(")[0].strip()


def _length(col: ColumnSpec) -> int | None:
    m = re.search(r"\(\s*(\d+)", col.type)
    return int(m.group(1)) if m else None


def _scale(col: ColumnSpec) -> int:
    m = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", col.type)
    return int(m.group(1)) if m else 4


def column_values(col: ColumnSpec) -> st.SearchStrategy[Any]:
    """Values for ``col`` (None included when it is nullable)."""
    kind = kind_of(col)
    declared = col.type.upper()
    if kind == "BIGINT":
        bound = 32767 if "SMALL" in declared or "INT2" in declared else 2**62
        base: st.SearchStrategy[Any] = st.integers(-bound, bound)
    elif kind == "DOUBLE PRECISION":
        base = st.integers(-4000, 4000).map(lambda k: k / 4)
    elif kind in ("NUMERIC", "DECIMAL"):
        scale = min(_scale(col), 2)
        base = st.integers(-99999, 99999).map(lambda k: k / 4 if scale >= 2 else float(k))
    elif kind == "BOOLEAN":
        base = st.sampled_from([0, 1])
    elif kind == "BYTEA":
        base = st.binary(max_size=8)
    elif kind == "DATE":
        base = st.dates(date(1990, 1, 1), date(2040, 12, 31)).map(date.isoformat)
    elif kind == "TIMESTAMP":
        base = st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1)).map(
            lambda d: d.replace(microsecond=0).isoformat())
    elif kind == "TIMESTAMPTZ":
        base = st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1)).map(
            lambda d: d.replace(microsecond=0, tzinfo=timezone.utc).isoformat())
    elif kind == "TIME":
        base = st.times(time(0, 0), time(23, 59, 59)).map(
            lambda t: t.replace(microsecond=0).isoformat())
    elif kind == "JSONB":
        base = _JSON.map(lambda v: json.dumps(v, ensure_ascii=False))
    elif kind == "UUID":
        base = st.uuids().map(str)
    else:                                       # TEXT, VARCHAR(n), CHAR(n), CLOB, others
        n = _length(col)
        if n is not None and declared.startswith(("CHAR", "NCHAR", "CHARACTER(")):
            base = st.text(alphabet="abcXYZ019", min_size=n, max_size=n)
        else:
            base = _TEXT if n is None else st.text(alphabet=_ALPHABET, max_size=min(n, 10))
    return st.none() | base if col.nullable else base


def key_value(col: ColumnSpec, owner: int, n: int) -> Any:
    """The ``n``-th primary key of writer ``owner`` (replicas 0..N-1, the dashboard N):
    disjoint between writers, so two systems never create the same record by accident."""
    kind = kind_of(col)
    if kind == "BIGINT":
        return owner * 1000 + n + 1
    if kind == "UUID":
        return str(uuid.UUID(int=(owner + 1) << 64 | (n + 1)))
    if kind in ("DOUBLE PRECISION", "NUMERIC", "DECIMAL"):
        return owner * 1000 + n + 1
    return f"w{owner}-k{n}"
