"""MemoryRemote: the engine's Remote protocol over the in-memory server model."""

from __future__ import annotations

import pytest

from tablesync.errors import AuthError
from tablesync.model import RowState, Version
from tablesync.remote import base
from tablesync.remote.memory import MemoryRemote, MemoryServer, ServerTable, wire_row

TASKS = ServerTable("tasks", "id", "system_id")


def _row(rid: str, hlc: int, scope: str = "sys-a") -> dict[str, object]:
    return wire_row(RowState(Version(hlc, "a"), data={"id": rid, "system_id": scope}))


def test_apply_returns_the_engines_outcome_type() -> None:
    remote = MemoryRemote(MemoryServer([TASKS]), system_id="sys-a")
    got = remote.apply("tasks", [_row("t1", 5), _row("t2", 5, scope="sys-b")])
    assert all(isinstance(o, base.ApplyOutcome) for o in got)
    assert [(o.id, o.outcome) for o in got] == [("t1", "applied"), ("t2", "forbidden")]
    sent = [_row("t1", 4)]
    (parsed,) = base.parse_outcomes("tasks", sent, [o._asdict() for o in remote.apply("tasks", sent)], "id")
    assert parsed.outcome == "superseded" and parsed.row is not None


def test_pull_pages_until_a_short_page() -> None:
    server = MemoryServer([TASKS])
    remote = MemoryRemote(server, system_id="sys-a")
    remote.apply("tasks", [_row(f"t{i}", 5) for i in range(5)])
    mark = remote.watermark()
    pages, after = [], 0
    for _ in range(10):
        page = remote.pull_page("tasks", "system_id", "sys-a", cursor=0, after_seq=after, limit=2)
        pages.append([r["id"] for r in page.rows])
        if page.size < 2:
            break
        after = page.last_seq
    assert pages == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert remote.pull_page("tasks", "system_id", "sys-a", cursor=mark, after_seq=0).rows == []
    assert remote.pull_page("tasks", "system_id", "sys-b", cursor=0, after_seq=0).rows == []


def test_no_accounts() -> None:
    remote = MemoryRemote(MemoryServer([TASKS]))
    with pytest.raises(AuthError, match="no accounts"):
        remote.sign_in("a@example.com", "pw")
    remote.close()
