"""The properties checked after every example (pure: rows and versions in, messages out).

* every replica equals the server for its scope (same live records, same versions, same
  values in wire form);
* nothing pending, nothing parked or refused without a reason;
* every local write is the record's final state, or was seen by a later write, or is in
  a conflict log (a replica's ``_tablesync_conflicts`` or the server's
  ``tablesync_conflicts``), or its record is parked with a reason;
* the outcome does not depend on delivery order: each record's final version is the
  maximum, under the conflict rule, of every version the server accepted for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tablesync.lww import sort_key
from tablesync.model import RowState, TableSpec, Version

__all__ = ["LocalWrite", "loser_version", "lost_writes", "same_value", "row_differences",
           "wrong_winners"]


@dataclass(frozen=True)
class LocalWrite:
    """One app write: ``who`` (replica name), record, the version it was stamped with."""

    who: str
    table: str
    rid: str
    version: Version
    deleted: bool
    step: int


def same_value(a: Any, b: Any) -> bool:
    """Equal in wire form: numbers by value (1.5 == 1.50, 2 == 2.0), never a boolean and
    a number, everything else exactly (JSON text: see :func:`row_differences`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if a == b:
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return False


def row_differences(spec: TableSpec, local: Mapping[str, Any],
                    server: Mapping[str, Any], json_columns: Iterable[str] = ()) -> list[str]:
    """``column: local != server`` for each user column that differs; a JSON column's
    local text is compared by the value it spells (``'""'`` is the JSON string ``""``)."""
    out = []
    texts = set(json_columns)
    for c in spec.column_names:
        mine = local.get(c)
        if c in texts and isinstance(mine, str):
            try:
                mine = json.loads(mine)
            except ValueError:
                pass
        if not (same_value(mine, server.get(c)) or same_value(local.get(c), server.get(c))):
            out.append(f"{c}: replica {local.get(c)!r} != server {server.get(c)!r}")
    return out


def loser_version(entry: Mapping[str, Any]) -> Version | None:
    """The losing version of a conflict-log entry (a replica's ``{"version": [h, o]}`` or
    the server's row with ``_ts_hlc``/``_ts_origin``)."""
    loser = entry.get("loser")
    if not isinstance(loser, dict):
        return None
    if isinstance(loser.get("version"), list) and len(loser["version"]) == 2:
        h, o = loser["version"]
        return Version(int(h), str(o))
    if "_ts_hlc" in loser:
        return Version(int(loser["_ts_hlc"]), str(loser.get("_ts_origin") or ""))
    return None


def lost_writes(writes: Iterable[LocalWrite], final: Mapping[tuple[str, str], Version],
                seen: set[tuple[str, str, Version]], logged: set[tuple[str, str, Version]],
                parked: set[tuple[str, str, str]]) -> list[LocalWrite]:
    """Local writes that are neither final, nor seen by a later write, nor in a conflict
    log, nor parked with a reason."""
    out = []
    for w in writes:
        key = (w.table, w.rid, w.version)
        if final.get((w.table, w.rid)) == w.version or key in seen or key in logged:
            continue
        if (w.who, w.table, w.rid) in parked:
            continue
        out.append(w)
    return out


def wrong_winners(specs: Mapping[str, TableSpec],
                  accepted: Mapping[tuple[str, str], list[RowState]],
                  final: Mapping[tuple[str, str], RowState]) -> list[str]:
    """Records whose final server version is not the conflict rule's maximum of every
    version the server accepted for them (the rule's order, not the arrival order,
    decides)."""
    out = []
    for (table, rid), states in accepted.items():
        got = final.get((table, rid))
        if got is None or not states:
            continue
        policy = specs[table].on_delete_conflict
        best = max(states, key=lambda s: sort_key(s, policy))
        if sort_key(got, policy) != sort_key(best, policy):
            out.append(f"{table} {rid!r}: the server holds {_v(got)}, but the conflict rule's "
                       f"winner among the {len(states)} version(s) it accepted is {_v(best)}")
    return out


def _v(s: RowState) -> str:
    kind = "delete" if s.deleted else "write"
    return f"{kind} {s.version.hlc >> 16}ms+{s.version.hlc & 0xFFFF}@{s.version.origin}"
