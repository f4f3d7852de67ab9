"""Values between a replica's SQLite representation and the wire form (docs/types.md).

The wire form is what PostgREST, the apply function and Realtime carry in JSON; the local
form is what SQLite holds:

==========  =================================  ==========================================
Postgres    wire (JSON)                        SQLite
==========  =================================  ==========================================
bytea       ``"\\x0a0b"`` (hex text)           ``bytes`` (BLOB)
jsonb       the JSON value                     its text, as Postgres prints jsonb
                                               (``{"a": 1, "b": [1, 2]}``); sent as text
boolean     ``true`` / ``false``               ``1`` / ``0``
double,     number (jsonb, numeric: maybe a    ``float`` (an integer beyond 64 bits read
numeric     huge integer, e.g. 1e300)          as a float)
others      number / text                      the same number / text
==========  =================================  ==========================================

:func:`codec` builds a :class:`Codec` per table once; a table without such columns gets
a codec whose conversions return their argument unchanged (no per-row cost).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Mapping, Sequence

from tablesync.model import Change, TableSpec
from tablesync.sql.base import pg_type


def jsonb_text(value: Any) -> str:
    """A JSON value printed as Postgres prints jsonb (``", "`` and ``": "`` separators, keys
    in the order received, non-ASCII characters as they are)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {jsonb_text(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


class Codec:
    """Conversions of one table's rows (user columns; other keys pass through)."""

    def __init__(self, spec: TableSpec) -> None:
        kinds = {c.name: pg_type(c.type).upper() for c in spec.columns}
        self.bytea = tuple(c for c, k in kinds.items() if k == "BYTEA")
        self.jsonb = tuple(c for c, k in kinds.items() if k == "JSONB")
        self.bools = tuple(c for c, k in kinds.items() if k == "BOOLEAN")
        # a double as jsonb (Realtime's to_jsonb), and a numeric anywhere (1e300 is stored
        # with all its digits), may be an integer beyond SQLite's 64 bits: SQLite's REAL
        # and NUMERIC affinities store such a number as a real
        self.reals = tuple(c for c, k in kinds.items()
                           if k == "DOUBLE PRECISION" or k.startswith(("DECIMAL", "NUMERIC")))
        self.identity = not (self.bytea or self.jsonb or self.bools or self.reals)
        # a key Postgres stores in another spelling would become another record id there
        self.uuid_key = spec.primary_key if kinds.get(spec.primary_key) == "UUID" else None

    def key_problem(self, data: Mapping[str, Any]) -> str | None:
        """Why this row's primary key would not survive Postgres unchanged, or None: a UUID
        key not in Postgres' canonical spelling (upper case, braces, no hyphens) is stored
        as another text, so the server and the other replicas would know the record under
        an id this replica does not have. Not a UUID at all: None (the server refuses it
        with its own reason, 22P02, and the record is parked with that)."""
        value = data.get(self.uuid_key) if self.uuid_key else None
        if not isinstance(value, str):
            return None
        try:
            canonical = str(uuid.UUID(value))
        except ValueError:
            return None
        if canonical == value:
            return None
        return (f"cannot be sent: its primary key {self.uuid_key!r} is {value!r}, which "
                f"Postgres stores as {canonical!r} (a different record id); write the key "
                "in that form")

    def to_wire(self, data: dict[str, Any]) -> dict[str, Any]:
        """A local row (or part of one) in wire form (a copy when anything changes)."""
        if self.identity:
            return data
        out = dict(data)
        for c in self.bytea:
            v = out.get(c)
            if isinstance(v, (bytes, bytearray, memoryview)):
                out[c] = "\\x" + bytes(v).hex()
        for c in self.bools:
            v = out.get(c)
            if type(v) is int and v in (0, 1):
                out[c] = bool(v)
        for c in self.jsonb:
            v = out.get(c)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[c] = json.dumps(v)          # NUMERIC affinity stored the text as a number
        return out

    def to_local(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """A wire row (server row, Realtime record, canonical values) in local form."""
        if self.identity:
            return row
        out: dict[str, Any] | None = None
        for c in self.bytea:
            v = row.get(c)
            if isinstance(v, str) and v.startswith("\\x"):
                try:
                    b = bytes.fromhex(v[2:])
                except ValueError:
                    continue
                out = out if out is not None else dict(row)
                out[c] = b
        for c in self.bools:
            v = row.get(c)
            if type(v) is bool:
                out = out if out is not None else dict(row)
                out[c] = int(v)
        for c in self.reals:
            v = row.get(c)
            if type(v) is int and not -2 ** 63 <= v < 2 ** 63:
                out = out if out is not None else dict(row)
                out[c] = float(v)
        for c in self.jsonb:
            if c in row and row[c] is not None:
                out = out if out is not None else dict(row)
                out[c] = jsonb_text(row[c])
        return row if out is None else out


_CODECS: dict[int, tuple[TableSpec, Codec]] = {}


def key_problems(specs: Mapping[str, TableSpec], batch: Sequence[Change]) -> dict[int, str]:
    """Index -> reason for each live record of ``batch`` whose key Postgres would store in
    another spelling (:meth:`Codec.key_problem`); empty for tables without a UUID key."""
    bad: dict[int, str] = {}
    for i, ch in enumerate(batch):
        spec = specs.get(ch.table)
        if spec is None or ch.state.deleted:
            continue
        why = codec(spec).key_problem(ch.state.data)
        if why is not None:
            bad[i] = why
    return bad


def codec(spec: TableSpec) -> Codec:
    """The codec of ``spec`` (built once per spec object)."""
    hit = _CODECS.get(id(spec))
    if hit is None or hit[0] is not spec:
        hit = _CODECS[id(spec)] = (spec, Codec(spec))
    return hit[1]
