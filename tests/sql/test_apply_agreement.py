"""Hypothesis on the real PostgreSQL: the generated apply function and tablesync.lww agree.

Generated sequences of writes to one record (deletes, exact hlc ties, delete positions
tying with edits, resends of the same write) are pushed in generated batches through
``tablesync_apply_<table>`` for both delete policies; every per-row outcome and the final
stored version must be what :mod:`tablesync.lww` says.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync import lww
from tablesync.model import DeletePolicy, RowState, Version

pytestmark = pytest.mark.postgres

ORIGINS = ["A", "B", "a", "Z", "é", "server", "中"]  # C-collation order == Python order
versions = st.builds(Version, st.integers(1, 6), st.sampled_from(ORIGINS))
bases = st.one_of(st.just(Version(0, "")), st.builds(Version, st.integers(0, 6),
                                                       st.sampled_from(ORIGINS)))
writes = st.builds(lambda v, d, b: RowState(v, d, b), versions, st.booleans(), bases)
_ids = itertools.count()

TABLES = {DeletePolicy.EDIT_WINS: "projects", DeletePolicy.LAST_WRITE_WINS: "results"}


def _unique(ws: list[RowState]) -> list[RowState]:
    """One version is one write: a repeated version becomes a resend of the first."""
    first: dict[Version, RowState] = {}
    return [first.setdefault(w.version, w) for w in ws]


FULL = {"projects": {"description": None, "created_at": None},
        "results": {"exit_code": None, "created_at": None}}


def _payload(table: str, rid: str, w: RowState, n: int, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"id": rid, "system_id": "system-a"}
    data.update({"name": f"w{n}"} if table == "projects" else {"task_id": "t0", "output": f"w{n}"})
    data.update(FULL[table] if full else {})
    return {**data, "_ts_hlc": w.version.hlc, "_ts_origin": w.version.origin,
            "_ts_deleted": w.deleted, "_ts_base_hlc": w.base.hlc,
            "_ts_base_origin": w.base.origin}


def _expected(cur: RowState | None, w: RowState, policy: DeletePolicy) -> str:
    if cur is None or lww.beats(w, cur, policy):
        return "applied"
    return "duplicate" if w.version == cur.version else "superseded"


@pytest.mark.parametrize("full", [False, True], ids=["partial-rows", "full-rows"])
@pytest.mark.parametrize("policy", list(DeletePolicy))
def test_sql_apply_agrees_with_lww(pg: Any, apply: Any, policy: DeletePolicy,
                                   full: bool) -> None:
    """Partial rows take the per-row path; full rows with distinct ids in a batch take
    the set-based path (a batch repeating an id falls back to the per-row path)."""
    table = TABLES[policy]
    apply(pg, "tasks", [{"id": "t0", "system_id": "system-a", "title": "t", "_ts_hlc": 1,
                         "_ts_origin": "A"}])

    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(writes, min_size=1, max_size=8), st.lists(st.integers(1, 4), min_size=1))
    def check(ws: list[RowState], cuts: list[int]) -> None:
        ws = _unique(ws)
        rid = f"r{next(_ids)}"
        cur: RowState | None = None
        logged: list[tuple[int, str, int, str]] = []     # the server conflict log, expected
        i, sizes = 0, itertools.cycle(cuts)
        while i < len(ws):
            batch = ws[i:i + next(sizes)]
            out = apply(pg, table, [_payload(table, rid, w, i + k, full)
                                   for k, w in enumerate(batch)])
            for w, o in zip(batch, out):
                assert o["outcome"] == _expected(cur, w, policy), (cur, w, o)
                if cur is not None and o["outcome"] == "applied" and lww.is_concurrent(w, cur):
                    logged.append((w.version.hlc, w.version.origin, cur.version.hlc,
                                   cur.version.origin))
                if o["outcome"] == "superseded":
                    assert (o["row"]["_ts_hlc"], o["row"]["_ts_origin"]) == (
                        cur.version.hlc, cur.version.origin)  # type: ignore[union-attr]
                cur = w if cur is None else lww.resolve(cur, w, policy)
            i += len(batch)
        stored = pg.execute(
            f"SELECT _ts_hlc, _ts_origin, _ts_deleted, _ts_base_hlc, _ts_base_origin "
            f"FROM {table} WHERE id = %s", (rid,)).fetchone()
        winner = lww.merge(ws, policy)
        assert winner is not None and winner == cur
        assert stored == (winner.version.hlc, winner.version.origin, winner.deleted,
                          winner.base.hlc, winner.base.origin)
        log = pg.execute("SELECT (winner ->> '_ts_hlc')::bigint, winner ->> '_ts_origin', "
                         "(loser ->> '_ts_hlc')::bigint, loser ->> '_ts_origin' FROM "
                         "tablesync_conflicts WHERE table_name = %s AND record_id = %s "
                         "ORDER BY id", (table, rid)).fetchall()
        assert log == logged

    check()
