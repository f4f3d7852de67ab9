"""The in-memory server model: apply outcomes, sequence/watermark pulls, scope, locks."""

from __future__ import annotations

from typing import Any

import pytest

from tablesync import clock
from tablesync.clock import FakeClock
from tablesync.model import ZERO, DeletePolicy, RowState, Version
from tablesync.remote.memory import (
    SERVER_ORIGIN,
    MemoryServer,
    MemoryServerError,
    Outcome,
    ServerTable,
    row_state,
    wire_row,
)

TASKS = ServerTable("tasks", "id", "system_id")
LWW_TABLE = ServerTable("notes", "id", "system_id", DeletePolicy.LAST_WRITE_WINS)


def server(**kw: Any) -> MemoryServer:
    return MemoryServer([TASKS, LWW_TABLE], wall=FakeClock(start_ms=1_000), **kw)


def w(hlc: int, origin: str = "a", *, deleted: bool = False, base: Version = ZERO,
      rid: str = "t1", scope: str = "sys-a", **cols: Any) -> dict[str, Any]:
    data = {"id": rid, "system_id": scope, **cols}
    return wire_row(RowState(Version(hlc, origin), deleted, base, data))


def catch_up(s: MemoryServer, cursor: int, limit: int = 1000,
             system_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """The documented pull loop: watermark first, pages by seq, cursor := watermark."""
    mark = s.watermark()
    out: list[dict[str, Any]] = []
    after = 0
    for _ in range(10_000):
        page = s.pull("tasks", cursor=cursor, after_seq=after, limit=limit, system_id=system_id)
        out.extend(page)
        if len(page) < limit:
            return out, mark
        after = page[-1]["_ts_seq"]
    raise AssertionError("unbounded paging")


def test_wire_rows_round_trip() -> None:
    state = RowState(Version(5, "a"), True, Version(3, "b"), {"id": "x", "n": 1})
    back = row_state(wire_row(state))
    assert back == state and dict(back.data) == {"id": "x", "n": 1}


def test_apply_outcomes_follow_the_conflict_rule() -> None:
    s = server()
    assert [r.outcome for r in s.apply("tasks", [w(10, title="first")])] == [Outcome.APPLIED]
    assert s.apply("tasks", [w(10, title="first")])[0].outcome is Outcome.DUPLICATE
    old = s.apply("tasks", [w(9, "z", title="older")])[0]
    assert old.outcome is Outcome.SUPERSEDED
    assert old.row is not None and old.row["title"] == "first" and old.row["_ts_hlc"] == 10
    assert s.apply("tasks", [w(11, "b", base=Version(10, "a"), title="newer")])[0].outcome \
        is Outcome.APPLIED
    assert s.row("tasks", "t1")["title"] == "newer"  # type: ignore[index]
    assert old.to_json()["outcome"] == "superseded"


def test_every_write_takes_a_new_sequence_value_and_transaction_id() -> None:
    s = server()
    s.apply("tasks", [w(10, rid="a"), w(10, rid="b")])
    s.apply("tasks", [w(11, rid="a", base=Version(10, "a"))])
    a, b = s.row("tasks", "a"), s.row("tasks", "b")
    assert a is not None and b is not None
    assert (b["_ts_seq"], a["_ts_seq"]) == (2, 3)
    assert b["_ts_xid"] < a["_ts_xid"]  # one transaction per apply call


def test_per_row_problems_never_fail_the_batch() -> None:
    s = server()
    rows = [w(10, rid="ok1"), {"system_id": "sys-a", "_ts_hlc": 1}, w(10, rid="other", scope="sys-b"),
            w(10, rid="ok2")]
    got = s.apply("tasks", rows, system_id="sys-a")
    assert [r.outcome for r in got] == [Outcome.APPLIED, Outcome.ERROR, Outcome.FORBIDDEN,
                                        Outcome.APPLIED]
    assert "primary key" in (got[1].message or "") and "sys-a" in (got[2].message or "")
    assert sorted(s.rows("tasks")) == ["ok1", "ok2"]


def test_rls_forbids_moving_someone_elses_row() -> None:
    s = server()
    s.apply("tasks", [w(10, scope="sys-b")])
    got = s.apply("tasks", [w(11, scope="sys-a")], system_id="sys-a")
    assert got[0].outcome is Outcome.FORBIDDEN


def test_tombstone_keeps_the_last_full_image() -> None:
    s = server()
    s.apply("tasks", [w(10, title="keep me")])
    tomb = wire_row(RowState(Version(12, "b"), True, Version(10, "a"), {"id": "t1"}))
    assert s.apply("tasks", [tomb])[0].outcome is Outcome.APPLIED
    row = s.row("tasks", "t1")
    assert row is not None and row["_ts_deleted"] and row["title"] == "keep me"


def test_edit_wins_on_the_server() -> None:
    s = server()
    s.apply("tasks", [w(10, title="v1")])
    # a delete that had seen v1 beats v1; a concurrent edit above v1 restores the row
    assert s.apply("tasks", [w(30, "b", deleted=True, base=Version(10, "a"))])[0].outcome \
        is Outcome.APPLIED
    restore = s.apply("tasks", [w(20, "c", base=Version(10, "a"), title="v2")])[0]
    assert restore.outcome is Outcome.APPLIED
    row = s.row("tasks", "t1")
    assert row is not None and not row["_ts_deleted"] and row["title"] == "v2"
    assert [(c.winner.version, c.loser.version) for c in s.conflicts] == [
        (Version(20, "c"), Version(30, "b"))]


def test_last_write_wins_table_lets_the_later_delete_win() -> None:
    s = server()
    s.apply("notes", [w(10)])
    s.apply("notes", [w(30, "b", deleted=True, base=Version(10, "a"))])
    assert s.apply("notes", [w(20, "c", base=Version(10, "a"))])[0].outcome is Outcome.SUPERSEDED


def test_concurrent_overwrites_are_logged_seen_ones_are_not() -> None:
    s = server()
    s.apply("tasks", [w(10, "a")])
    s.apply("tasks", [w(11, "b", base=Version(10, "a"))])  # had seen a's write
    assert s.conflicts == []
    s.apply("tasks", [w(12, "c")])  # had not seen b's
    assert [(c.winner.version, c.loser.version) for c in s.conflicts] == [
        (Version(12, "c"), Version(11, "b"))]


def test_dashboard_write_is_stamped_above_the_stored_version() -> None:
    s = server()  # the server's clock reads 1_000 ms
    s.apply("tasks", [w(clock.pack(5_000), "a", title="from a fast clock")])
    s.write("tasks", {"id": "t1", "system_id": "sys-a", "title": "dashboard"})
    row = s.row("tasks", "t1")
    assert row is not None
    assert (row["_ts_hlc"], row["_ts_origin"]) == (clock.pack(5_000) + 1, SERVER_ORIGIN)
    assert (row["_ts_base_hlc"], row["_ts_base_origin"]) == (clock.pack(5_000), "a")
    s.write("tasks", {"id": "t2", "system_id": "sys-a"})
    assert s.row("tasks", "t2")["_ts_hlc"] == clock.pack(1_000)  # type: ignore[index]


def test_pull_pages_in_sequence_order_and_filters_scope() -> None:
    s = server()
    for i in range(7):
        s.apply("tasks", [w(10, rid=f"r{i}", scope="sys-a" if i % 3 else "sys-b")])
    rows, _ = catch_up(s, cursor=0, limit=2, system_id="sys-a")
    assert [r["id"] for r in rows] == ["r1", "r2", "r4", "r5"]
    assert len(s.pull("tasks", cursor=0, limit=3)) == 3


def test_watermark_is_the_oldest_running_transaction() -> None:
    s = server()
    s.apply("tasks", [w(10, rid="a")])
    idle = s.begin()  # no write yet: no id, no effect
    assert s.watermark() == s.row("tasks", "a")["_ts_xid"] + 1  # type: ignore[index]
    slow = s.begin()
    s.apply("tasks", [w(10, rid="b")], txn=slow)
    s.apply("tasks", [w(10, rid="c")])
    assert s.watermark() == slow.xid
    s.commit(slow)
    s.rollback(idle)
    assert s.watermark() == s.row("tasks", "c")["_ts_xid"] + 1  # type: ignore[index]


def test_late_commit_is_caught_by_the_watermark_cursor_not_by_a_sequence_cursor() -> None:
    s = server()
    slow = s.begin()
    s.apply("tasks", [w(10, rid="late")], txn=slow)  # takes seq 1, xid first
    s.apply("tasks", [w(10, rid="early")])  # seq 2, commits now
    rows, cursor = catch_up(s, cursor=0)
    assert [r["id"] for r in rows] == ["early"]
    naive_seq_cursor = rows[-1]["_ts_seq"]
    s.commit(slow)
    rows, cursor = catch_up(s, cursor=cursor)
    assert "late" in [r["id"] for r in rows]
    # the pitfall the watermark avoids: "seq greater than the last seen" skips it
    assert [r["id"] for r in s.pull("tasks", cursor=0, after_seq=naive_seq_cursor)] == []


def test_uncommitted_writes_are_invisible_and_lock_the_row() -> None:
    s = server()
    heard: list[str] = []
    s.subscribe(lambda table, row: heard.append(row["id"]))
    txn = s.begin()
    assert s.apply("tasks", [w(10)], txn=txn)[0].outcome is Outcome.APPLIED
    assert s.apply("tasks", [w(11)], txn=txn)[0].outcome is Outcome.APPLIED  # sees its own
    assert s.row("tasks", "t1") is None and s.pull("tasks", cursor=0) == [] and heard == []
    blocked = s.apply("tasks", [w(12, "b")])[0]
    assert blocked.outcome is Outcome.ERROR and "locked" in (blocked.message or "")
    s.commit(txn)
    assert heard == ["t1", "t1"]
    assert s.apply("tasks", [w(12, "b")])[0].outcome is Outcome.APPLIED


def test_rollback_discards_writes_and_conflicts() -> None:
    s = server()
    s.apply("tasks", [w(10, "a")])
    txn = s.begin()
    s.apply("tasks", [w(20, "b")], txn=txn)
    s.rollback(txn)
    assert s.row("tasks", "t1")["_ts_hlc"] == 10  # type: ignore[index]
    assert s.conflicts == []
    with pytest.raises(MemoryServerError, match="already ended"):
        s.commit(txn)


def test_unknown_table_is_named() -> None:
    with pytest.raises(MemoryServerError, match="unknown table 'nope'"):
        server().apply("nope", [])


def test_unsubscribe_stops_notifications() -> None:
    s = server()
    heard: list[str] = []
    stop = s.subscribe(lambda table, row: heard.append(table))
    s.apply("tasks", [w(10)])
    stop()
    s.apply("tasks", [w(11)])
    assert heard == ["tasks"]


def test_a_winning_delete_keeps_its_own_stamp_even_when_lower_than_the_stored_one() -> None:
    """edit-wins orders deletes by base first: a delete of a newer version wins over an
    older delete stamped later. The server must keep the incoming version as is (the
    trigger may stamp only writes that did not bring a version, never "not newer" ones),
    or the pusher and the server would hold different versions of the same write."""
    s = server()
    s.apply("tasks", [w(10, "a")])
    s.apply("tasks", [w(900, "fast", deleted=True, base=Version(10, "a"))])
    # b edited (20) then deleted (30) offline; coalescing pushes only the delete
    late = w(30, "b", deleted=True, base=Version(20, "b"))
    assert s.apply("tasks", [late])[0].outcome is Outcome.APPLIED
    row = s.row("tasks", "t1")
    assert row is not None and (row["_ts_hlc"], row["_ts_origin"]) == (30, "b")
