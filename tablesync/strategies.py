"""Hypothesis strategies for a synced table's rows, derived from its declared schema.

Values are in the form an application writes through plain ``sqlite3`` (docs/types.md,
"SQLite (replica)" column). Two families (docs/strategies.md):

- **valid** (``hostile=False``): what an application validly writes and the server holds,
  possibly in a canonical form it returns (``'yes'`` in a BOOLEAN, an upper-case UUID,
  ``1.234`` in a NUMERIC(12,2)). NOT NULL, declared lengths (VARCHAR(n), NUMERIC(p,s)),
  primary keys and foreign keys (``references=``) are respected. Such a row is never
  parked.
- **hostile** (``hostile=True``): values a careless application writes, mixed in
  (:func:`values`) or spoiling one or two columns of a valid row (:func:`rows`): NUL in
  text, text that is not valid UTF-8 (:class:`RawText`), a BLOB in a TEXT column, NaN and
  +-Infinity, impossible dates, text in a number column, JSON that is not JSON. Each must
  either arrive identically everywhere or be parked with a reason.

``edge=True`` mixes in the edge values of each type (+-(2^63-1), -0.0, 1e-300, emoji and
RTL text, empty and 64 KiB blobs, odd offsets, nested JSON...); ``big=True`` adds the
10 MB text and the 1 MiB blob. :func:`insert` and :func:`update` render a drawn row as
a statement with its parameters.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any, Mapping, Sequence

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from tablesync.errors import ConfigError, TablesyncError
from tablesync.model import ColumnSpec, TableSpec
from tablesync.sql.base import ident, pg_type

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63
BIG_TEXT_BYTES = 10 * 1024 * 1024
BIG_BLOB_BYTES = 1024 * 1024
LARGE_BLOB_BYTES = 64 * 1024


class Kind(str, Enum):
    """The family of a column's Postgres type (docs/types.md)."""

    INTEGER = "integer"
    REAL = "real"
    NUMERIC = "numeric"
    TEXT = "text"
    BLOB = "blob"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    TIME = "time"
    JSON = "json"
    UUID = "uuid"
    OTHER = "other"


_KINDS = {"BIGINT": Kind.INTEGER, "DOUBLE PRECISION": Kind.REAL, "DECIMAL": Kind.NUMERIC,
          "TEXT": Kind.TEXT, "BYTEA": Kind.BLOB, "BOOLEAN": Kind.BOOLEAN, "DATE": Kind.DATE,
          "TIMESTAMP": Kind.TIMESTAMP, "TIMESTAMPTZ": Kind.TIMESTAMPTZ, "TIME": Kind.TIME,
          "JSONB": Kind.JSON, "UUID": Kind.UUID}
_ARGS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


@dataclass(frozen=True)
class ColumnType:
    """A column's :class:`Kind` and declared sizes: ``length`` of VARCHAR(n)/CHAR(n),
    ``precision``/``scale`` of NUMERIC(p,s) (None when not declared)."""

    kind: Kind
    length: int | None = None
    precision: int | None = None
    scale: int | None = None


def column_type(column: ColumnSpec) -> ColumnType:
    """The :class:`ColumnType` of ``column`` (its declaration read through ``pg_type``)."""
    pg = pg_type(column.type).upper()
    base = pg.split("(")[0].strip()
    kind = _KINDS.get(base, Kind.OTHER)
    args = _ARGS.search(column.type)
    if kind is Kind.NUMERIC and args:
        scale = int(args.group(2)) if args.group(2) else 0
        return ColumnType(kind, precision=int(args.group(1)), scale=scale)
    if kind is Kind.TEXT and args and not args.group(2):
        return ColumnType(kind, length=int(args.group(1)))
    return ColumnType(kind)


class RawText(bytes):
    """Bytes the application stores as TEXT (``CAST(? AS TEXT)``, see :func:`insert`):
    text that is not valid UTF-8, which Python's sqlite3 cannot bind as a ``str``."""

    def __repr__(self) -> str:
        return f"RawText({bytes(self)!r})"


# ------------------------------------------------------------------ edge values

_EMOJI = "👩‍👩‍👧‍👦🏳️‍🌈🙂"
_RTL = "שלום עולם مرحبا بالعالم \u202eRTL-override\u202c"
VALID_TEXT_EDGES: tuple[str, ...] = (
    "", " ", "a", _EMOJI, _RTL, "e\u0301 combining", "tab\tnew\nline\r\n", "quote' \"dq\"",
    "back\\slash", "%_wild", "\ufeffBOM", "\U0010ffff", "NULL", "null", "0", "-0",
    "1e308", "x" * 1024, "ü" * 1024,
)
HOSTILE_TEXT_EDGES: tuple[Any, ...] = (
    "nul\x00inside", "\x00", RawText(b"a\xffb"), RawText(b"\xc3\x28"), RawText(b"\xed\xa0\x80"),
    b"\x00\x01blob in text", b"",
)
VALID_INTEGER_EDGES: tuple[int, ...] = (0, 1, -1, INT64_MAX, -INT64_MAX, INT64_MIN,
                                        2 ** 31, -2 ** 31 - 1, 2 ** 53 + 1)
VALID_REAL_EDGES: tuple[float, ...] = (0.0, -0.0, 1e-300, -1e-300, 5e-324, 2.2250738585072014e-308,
                                       1.7976931348623157e308, -1.7976931348623157e308, 1e300,
                                       0.1, 3.141592653589793, 2.0 ** 53 + 2, 1e16, -1.5)
NONFINITE: tuple[float, ...] = (float("nan"), float("inf"), float("-inf"))
VALID_BLOB_EDGES: tuple[bytes, ...] = (b"", b"\x00", b"\xff" * 3, bytes(range(256)))
VALID_DATE_EDGES: tuple[str, ...] = ("2024-02-29", "2000-02-29", "1900-03-01", "1970-01-01",
                                     "0001-01-01", "9999-12-31", "January 8, 2024")
HOSTILE_DATE_EDGES: tuple[str, ...] = ("2024-02-30", "2023-02-29", "2024-13-01", "0000-01-01",
                                       "not a date", "", "infinity", "-infinity",
                                       "0044-03-15 BC", "10000-01-01")
VALID_TIME_EDGES: tuple[str, ...] = ("00:00:00", "23:59:59.999999", "12:00", "24:00:00",
                                     "10:00:00.5")
HOSTILE_TIME_EDGES: tuple[str, ...] = ("25:00:00", "12:60:00", "noon", "")
VALID_TIMESTAMP_EDGES: tuple[str, ...] = (
    "2024-01-01T10:00:00", "2024-01-01 10:00", "2024-02-29T23:59:59.999999",
    "1970-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
    "2024-01-01T10:00:00+05:00", "2024-03-31T02:30:00")
VALID_TIMESTAMPTZ_EDGES: tuple[str, ...] = (
    "2024-01-01T10:00:00+00:00", "2024-01-01 10:00:00+05:45", "2024-01-01T10:00:00-12:00",
    "2024-01-01T10:00:00+14:00", "1970-01-01T00:00:00Z", "2024-03-31T02:30:00+01:00",
    "2024-01-01T10:00:00.123456+05:30", "2024-01-01T10:00:00+00:00:30",
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00")
HOSTILE_TIMESTAMP_EDGES: tuple[str, ...] = ("2024-02-30T00:00:00", "2024-01-01T25:00:00",
                                            "yesterday-ish", "", "infinity",
                                            "2024-01-01T10:00:00+25:00")
VALID_JSON_EDGES: tuple[str, ...] = (
    "{}", "[]", "null", "0", "-0", "1.50", "1e2", '""', '"text"', "true",
    '{"b": 1,   "a": [1, 2, {"z": null}], "ü": "ß"}', '{"a": {"b": {"c": [[[[{"d": []}]]]]}}}',
    '{"a": 1, "a": 2}', '{"": "", " ": " "}', '"\\u00e9 \\ud83d\\ude42"', f'"{_EMOJI}"',
    '{"n": 12345678901234567890123, "f": 1e-300, "g": 1.7976931348623157e308}',
    '[' * 30 + ']' * 30)
HOSTILE_JSON_EDGES: tuple[str, ...] = ("not json", "{", "NaN", "Infinity", '"\\u0000"',
                                       '"\\ud800"', "{'a': 1}", "", "[1,]")
VALID_UUID_EDGES: tuple[str, ...] = (
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
    "a0eebc999c0b4ef8bb6d6bb9bd380a11")
VALID_BOOLEAN_EDGES: tuple[Any, ...] = (0, 1, True, False, "yes", "no", "t", "false")
HOSTILE_BOOLEAN_EDGES: tuple[Any, ...] = (2, -1, "maybe", "", 0.5)
WRONG_TYPE: tuple[Any, ...] = ("abc", "", "1,5")       # text where a number is declared


@functools.lru_cache(maxsize=1)
def big_text() -> str:
    """A 10 MB text (UTF-8 bytes) of ASCII, emoji, RTL and combining characters."""
    unit = ("plain ascii " + _EMOJI + " " + _RTL + " e\u0301\n").encode()
    raw = (unit * (BIG_TEXT_BYTES // len(unit) + 1))[:BIG_TEXT_BYTES]
    text = raw.decode("utf-8", "ignore")        # a character cut in two is dropped...
    return text + "x" * (BIG_TEXT_BYTES - len(text.encode()))   # ...and made up in ASCII


@functools.lru_cache(maxsize=1)
def big_blob() -> bytes:
    """A 1 MiB blob of every byte value."""
    return bytes(range(256)) * (BIG_BLOB_BYTES // 256)


# ------------------------------------------------------------------ per kind

_SAFE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


_VALID_EDGES: dict[Kind, tuple[Any, ...]] = {
    Kind.INTEGER: VALID_INTEGER_EDGES, Kind.REAL: VALID_REAL_EDGES,
    Kind.NUMERIC: (0, -1, 12.5, 0.1, 1e-300, 1e300, -1.7976931348623157e308, INT64_MAX,
                   -INT64_MAX),
    Kind.TEXT: VALID_TEXT_EDGES, Kind.OTHER: VALID_TEXT_EDGES,
    Kind.BLOB: VALID_BLOB_EDGES + (bytes(LARGE_BLOB_BYTES),),
    Kind.BOOLEAN: VALID_BOOLEAN_EDGES, Kind.DATE: VALID_DATE_EDGES,
    Kind.TIME: VALID_TIME_EDGES, Kind.TIMESTAMP: VALID_TIMESTAMP_EDGES,
    Kind.TIMESTAMPTZ: VALID_TIMESTAMPTZ_EDGES, Kind.JSON: VALID_JSON_EDGES,
    Kind.UUID: VALID_UUID_EDGES,
}
_HOSTILE_EDGES: dict[Kind, tuple[Any, ...]] = {
    Kind.INTEGER: WRONG_TYPE + NONFINITE + (1.5, 1e300, "12abc"),
    Kind.NUMERIC: WRONG_TYPE + NONFINITE + ("12abc",),
    Kind.REAL: WRONG_TYPE + NONFINITE,
    Kind.TEXT: HOSTILE_TEXT_EDGES, Kind.OTHER: HOSTILE_TEXT_EDGES,
    Kind.BLOB: ("text in a blob", "", "\\x0g", RawText(b"\xff\xfe")),
    Kind.BOOLEAN: HOSTILE_BOOLEAN_EDGES, Kind.DATE: HOSTILE_DATE_EDGES,
    Kind.TIME: HOSTILE_TIME_EDGES, Kind.TIMESTAMP: HOSTILE_TIMESTAMP_EDGES,
    Kind.TIMESTAMPTZ: HOSTILE_TIMESTAMP_EDGES, Kind.JSON: HOSTILE_JSON_EDGES,
    Kind.UUID: ("not-a-uuid", "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", 42),
}


def edge_values(column: ColumnSpec, *, hostile: bool = False) -> tuple[Any, ...]:
    """The explicit edge values of ``column``'s type: valid ones (within a declared
    VARCHAR(n)/NUMERIC(p,s)), or with ``hostile=True`` the hostile ones."""
    ct = column_type(column)
    if hostile:
        return _HOSTILE_EDGES[ct.kind]
    if ct.kind is Kind.NUMERIC and ct.precision is not None:
        bound = 10 ** (ct.precision - (ct.scale or 0))
        return tuple(v for v in (0, 1.234, -0.5, 0.005, bound - 1, -(bound - 1), 12.5)
                     if abs(v) < bound)
    edges = _VALID_EDGES[ct.kind]
    if ct.length is not None:
        edges = tuple(e for e in edges if len(e) <= ct.length)
    return edges


_SAFE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


def _numeric(ct: ColumnType) -> SearchStrategy[Any]:
    if ct.precision is None:
        return st.integers(-INT64_MAX, INT64_MAX) | st.floats(-1e15, 1e15, allow_nan=False)
    scale = ct.scale or 0
    bound = 10 ** (ct.precision - scale) - 1
    ints = st.integers(-bound, bound)
    if scale == 0:
        return ints
    quantum = Decimal(1).scaleb(-scale)
    dec = st.decimals(-Decimal(bound), Decimal(bound), places=scale,
                      allow_nan=False, allow_infinity=False)
    # the application writes a float; more decimals than the scale are rounded (canonical)
    return ints | dec.map(lambda d: float(d.quantize(quantum)))


def _datetime(tz: bool) -> SearchStrategy[str]:
    naive = st.datetimes(datetime(1900, 1, 1), datetime(2200, 12, 31))
    if not tz:
        return naive.map(lambda d: d.isoformat())
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return st.builds(lambda d, z: d.replace(tzinfo=z).isoformat(sep=" "), naive, offsets)


_JSON_SCALARS: SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(_SAFE_CHARS, max_size=12))


def json_values(max_leaves: int = 12) -> SearchStrategy[Any]:
    """Nested JSON values Postgres' jsonb can hold (no NUL, no NaN)."""
    return st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(_SAFE_CHARS, max_size=8), inner, max_size=4), max_leaves=max_leaves)


def _general(ct: ColumnType) -> SearchStrategy[Any]:
    """Valid values of the type beyond its edge values."""
    k = ct.kind
    if k is Kind.INTEGER:
        return st.integers(-INT64_MAX, INT64_MAX)
    if k is Kind.REAL:
        return st.floats(allow_nan=False, allow_infinity=False)
    if k is Kind.NUMERIC:
        return _numeric(ct)
    if k is Kind.BLOB:
        return st.binary(max_size=64)
    if k is Kind.BOOLEAN:
        return st.sampled_from((0, 1))
    if k is Kind.DATE:
        return st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)
    if k is Kind.TIME:
        return st.times().map(time.isoformat)
    if k in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return _datetime(k is Kind.TIMESTAMPTZ)
    if k is Kind.JSON:
        return st.builds(lambda v, compact: json.dumps(
            v, ensure_ascii=False, separators=(",", ":") if compact else None),
            json_values(), st.booleans())
    if k is Kind.UUID:
        return st.uuids().map(str)
    return st.text(_SAFE_CHARS, max_size=ct.length if ct.length is not None else 40)


def hostile_values(column: ColumnSpec) -> SearchStrategy[Any]:
    """Only hostile values of ``column`` (its hostile edge values; for text also NUL
    inside any text, random bytes as :class:`RawText` and as a BLOB). No NaN in a NOT NULL
    column: SQLite stores a NaN as NULL, so the application's write fails there."""
    ct = column_type(column)
    edges = _HOSTILE_EDGES[ct.kind]
    if not column.nullable:                     # SQLite stores NaN as NULL: refused here
        edges = tuple(v for v in edges if not (isinstance(v, float) and math.isnan(v)))
    out: SearchStrategy[Any] = st.sampled_from(edges)
    if ct.kind in (Kind.TEXT, Kind.OTHER):
        piece = st.text(_SAFE_CHARS, max_size=10)
        with_nul = st.builds(lambda a, b: a + "\x00" + b, piece, piece)
        out = out | with_nul | st.binary(max_size=8).map(RawText) | st.binary(max_size=8)
    return out


def values(column: ColumnSpec, *, hostile: bool = False, edge: bool = True,
           big: bool = False) -> SearchStrategy[Any]:
    """Values of ``column`` as an application writes them (None only when nullable);
    ``hostile=True`` mixes :func:`hostile_values` in."""
    ct = column_type(column)
    out = _general(ct)
    if edge:
        out = st.sampled_from(edge_values(column)) | out
    if hostile:
        out = out | hostile_values(column)
    if big and ct.kind in (Kind.TEXT, Kind.OTHER) and ct.length is None:
        out = out | st.just(big_text())
    if big and ct.kind is Kind.BLOB:
        out = out | st.just(big_blob())
    if column.nullable:
        out = st.none() | out
    return out


# ------------------------------------------------------------------ rows

def key_values(column: ColumnSpec) -> SearchStrategy[Any]:
    """Primary key values: integers, or non-empty text (awkward characters included)."""
    if column_type(column).kind is Kind.INTEGER:
        return st.integers(-INT64_MAX, INT64_MAX)
    safe = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=24)
    awkward = st.sampled_from(("id with space", "quote'id", "dq\"id", "ünï", _EMOJI, "שלום",
                               "a/b?c=d&e", "%25", "NULL"))
    return awkward | safe


def rows(table: TableSpec, *, hostile: bool = False, edge: bool = True, big: bool = False,
         fixed: Mapping[str, Any] | None = None,
         references: Mapping[str, Sequence[Any]] | None = None,
         keys: SearchStrategy[Any] | None = None) -> SearchStrategy[dict[str, Any]]:
    """One row of ``table``: ``{column: value}`` for the columns the application writes.

    ``fixed`` pins columns (e.g. the scope column to the system id); ``references`` gives
    the parent keys a foreign-key column may take (without them a nullable one is None and
    a NOT NULL one is a ConfigError); ``keys`` replaces :func:`key_values` for the key.
    A column with a DEFAULT, and a nullable one, may be left out (the database fills it).
    ``hostile=True``: a valid row in which one or two columns hold a hostile value
    (:func:`hostile_values`); the primary key, fixed and foreign-key columns stay valid."""
    fixed = dict(fixed or {})
    references = references or {}
    fk_cols = {c for fk in table.foreign_keys for c in fk.columns}
    parts: dict[str, SearchStrategy[Any]] = {}
    optional: set[str] = set()
    for col in table.columns:
        name = col.name
        if name in fixed:
            parts[name] = st.just(fixed[name])
            continue
        if name == table.primary_key:
            parts[name] = keys if keys is not None else key_values(col)
            continue
        if name in fk_cols:
            choices = list(references.get(name, ()))
            if not choices and not col.nullable:
                raise ConfigError(f"table {table.name} column {name}: a NOT NULL foreign key "
                                  "has no parent keys to draw from",
                                  location=table.schema_file or table.name,
                                  hint="pass references={column: [parent keys]}")
            parts[name] = (st.none() if col.nullable else st.nothing()) | \
                st.sampled_from(choices) if choices else st.none()
            continue
        parts[name] = values(col, edge=edge, big=big)
        if col.default is not None or col.nullable:
            optional.add(name)
    present = st.fixed_dictionaries({n: st.booleans() for n in sorted(optional)})
    valid = st.builds(lambda row, keep: {k: v for k, v in row.items() if keep.get(k, True)},
                      st.fixed_dictionaries(parts), present)
    targets = [c for c in table.columns if c.name not in fixed and c.name not in fk_cols
               and c.name != table.primary_key]
    if not hostile or not targets:
        return valid

    def spoil(picked: tuple[dict[str, Any], list[ColumnSpec]]) -> SearchStrategy[dict[str, Any]]:
        row, cols = picked
        bad = st.fixed_dictionaries({c.name: hostile_values(c) for c in cols})
        return bad.map(lambda values: {**row, **values})

    cols = st.lists(st.sampled_from(targets), min_size=1, max_size=2,
                    unique_by=lambda c: c.name)
    return st.tuples(valid, cols).flatmap(spoil)


def unique_rows(table: TableSpec, *, min_size: int = 0, max_size: int = 10,
                **kw: Any) -> SearchStrategy[list[dict[str, Any]]]:
    """A list of :func:`rows` with distinct primary keys (same keyword arguments)."""
    return st.lists(rows(table, **kw), min_size=min_size, max_size=max_size,
                    unique_by=lambda r: r[table.primary_key])


def insert(table: TableSpec, row: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``INSERT INTO table (...) VALUES (...)`` for SQLite with its parameters (identifiers
    quoted through sqlglot; a :class:`RawText` value is stored as TEXT)."""
    cols = list(row)
    marks = ["CAST(? AS TEXT)" if isinstance(row[c], RawText) else "?" for c in cols]
    sql = (f"INSERT INTO {ident(table.name, 'sqlite')} "
           f"({', '.join(ident(c, 'sqlite') for c in cols)}) VALUES ({', '.join(marks)})")
    return sql, [bytes(v) if isinstance(v, RawText) else v for v in (row[c] for c in cols)]


def update(table: TableSpec, row: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``UPDATE table SET ... WHERE key = ?`` for SQLite setting every column of ``row``
    but the primary key (which ``row`` must hold), with its parameters."""
    key = table.primary_key
    cols = [c for c in row if c != key]
    if not cols:
        raise TablesyncError(f"table {table.name}: an update needs a column besides {key!r}")
    sets = ", ".join(f"{ident(c, 'sqlite')} = "
                     f"{'CAST(? AS TEXT)' if isinstance(row[c], RawText) else '?'}"
                     for c in cols)
    sql = (f"UPDATE {ident(table.name, 'sqlite')} SET {sets} "
           f"WHERE {ident(key, 'sqlite')} = ?")
    return sql, [*(bytes(v) if isinstance(v, RawText) else v for v in (row[c] for c in cols)),
                 row[key]]
