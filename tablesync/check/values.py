"""Values and keys the check's writers use.

Column values come from :mod:`tablesync.strategies` (valid mode: what an app validly
writes, in the local SQLite form, NOT NULL and declared lengths respected). A CHECK or
UNIQUE constraint the declaration carries is not modelled: SQLite (or, for a dashboard
write, PostgreSQL) refuses such a write and the check records it as refused, as the app
would see it. Keys are the check's own (:func:`key_value`): disjoint per writer.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from tablesync import strategies
from tablesync.model import ColumnSpec
from tablesync.strategies import Kind, column_type

__all__ = ["column_values", "key_value"]


def column_values(col: ColumnSpec) -> st.SearchStrategy[Any]:
    """Values for ``col`` that an app validly writes (None included when it is nullable):
    :func:`tablesync.strategies.values` without the hostile ones, edge values included
    (canonical forms such as ``'yes'`` in a BOOLEAN, +-(2^63-1), emoji...)."""
    return strategies.values(col, hostile=False, edge=True)


def key_value(col: ColumnSpec, owner: int, n: int) -> Any:
    """The ``n``-th primary key of writer ``owner`` (replicas 0..N-1, the dashboard N):
    disjoint between writers, so two systems never create the same record by accident."""
    kind = column_type(col).kind
    if kind in (Kind.INTEGER, Kind.REAL, Kind.NUMERIC):
        return owner * 1000 + n + 1
    if kind is Kind.UUID:
        return str(uuid.UUID(int=(owner + 1) << 64 | (n + 1)))
    return f"w{owner}-k{n}"
