"""Pure conversions between server rows (user columns + ``_ts_*``) and RowState."""

from __future__ import annotations

from typing import Any, Mapping

from tablesync.model import RowState, TableSpec, Version

TS_KEYS = ("_ts_hlc", "_ts_origin", "_ts_deleted", "_ts_base_hlc", "_ts_base_origin")


def state_from_row(row: Mapping[str, Any], spec: TableSpec) -> RowState:
    """A server row as a RowState (data keeps only the table's declared columns)."""
    data = {c: row[c] for c in spec.column_names if c in row}
    return RowState(
        version=Version(int(row.get("_ts_hlc") or 0), str(row.get("_ts_origin") or "")),
        deleted=bool(row.get("_ts_deleted") or False),
        base=Version(int(row.get("_ts_base_hlc") or 0), str(row.get("_ts_base_origin") or "")),
        data=data,
    )


def row_from_state(state: RowState) -> dict[str, Any]:
    """The push payload of one state: its data plus the five version keys."""
    return {**state.data, "_ts_hlc": state.version.hlc, "_ts_origin": state.version.origin,
            "_ts_deleted": state.deleted, "_ts_base_hlc": state.base.hlc,
            "_ts_base_origin": state.base.origin}


def state_json(state: RowState) -> dict[str, Any]:
    """A state for the conflict log (JSON-serialisable)."""
    return {"version": [state.version.hlc, state.version.origin], "deleted": state.deleted,
            "base": [state.base.hlc, state.base.origin], "data": dict(state.data)}


def version_text(v: Version) -> str:
    return f"{v.hlc}:{v.origin}"
