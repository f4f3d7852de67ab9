"""PgRemote runs the generated SQL as `authenticated` with the system's JWT claims, so RLS,
grants and the apply function's rule apply as behind PostgREST."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.check.cluster import Cluster
from tablesync.check.remote_pg import PgRemote
from tablesync.project import load_project

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


def row(rid: str, system: str, hlc: int, title: str = "t") -> dict[str, object]:
    return {"id": rid, "system_id": system, "project_id": None, "title": title,
            "status": "pending", "priority": 0, "payload": None, "updated_at": None,
            "_ts_hlc": hlc, "_ts_origin": system, "_ts_deleted": False, "_ts_base_hlc": 0,
            "_ts_base_origin": ""}


def test_apply_pull_and_rls_through_the_generated_sql(pg_dsn: str) -> None:
    project = load_project(ROOT / "sync.toml")
    cluster = Cluster(project, dsn=pg_dsn)
    specs = {t.name: t for t in project.tables}
    a, b = PgRemote(pg_dsn, "sys-a", specs), PgRemote(pg_dsn, "sys-b", specs)
    try:
        hlc = 1 << 16
        (out,) = a.apply("tasks", [row("t1", "sys-a", hlc)])
        assert out.outcome.value == "applied"
        (again,) = a.apply("tasks", [row("t1", "sys-a", hlc)])
        assert again.outcome.value == "duplicate"
        (older,) = a.apply("tasks", [row("t1", "sys-a", hlc - 1, "old")])
        assert older.outcome.value == "superseded" and older.row is not None
        page = a.pull_page("tasks", "system_id", "sys-a", 0, 0)
        assert [r["id"] for r in page.rows] == ["t1"] and page.last_seq is not None
        assert b.pull_page("tasks", "system_id", "sys-b", 0, 0).rows == []   # RLS
        # b cannot write into a's scope: the policy refuses it
        (foreign,) = b.apply("tasks", [row("t2", "sys-a", hlc)])
        assert foreign.outcome.value in ("forbidden", "error")
        assert a.watermark() > 0
        a.down = True
        with pytest.raises(Exception, match="offline"):
            a.watermark()
        cluster.reset()
        assert cluster.rows("tasks") == []
    finally:
        a.close()
        b.close()
        cluster.close()
