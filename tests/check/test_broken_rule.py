"""Issue 17 item 4: the check earns its keep. The server's apply function is broken on
purpose (it compares versions the wrong way: an older version replaces a newer one); the
check must fail and shrink to a short readable counterexample."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.check import run_check
from tablesync.check.cluster import Cluster
from tablesync.sql import postgres

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def compare_the_wrong_way(cluster: Cluster) -> None:
    """CREATE OR REPLACE every apply function with ``>`` turned into ``<`` (both the
    per-row and the set-based path)."""
    for spec in cluster.project.tables:
        sql = postgres.apply_function_sql(spec)
        for new, cur in (("inc", "cur"), ("EXCLUDED", "tgt")):
            a = postgres.sort_key_sql(new, spec.on_delete_conflict)
            b = postgres.sort_key_sql(cur, spec.on_delete_conflict)
            assert f"{a} > {b}" in sql, "the generated apply function changed shape"
            sql = sql.replace(f"{a} > {b}", f"{a} < {b}")
        cluster.execute(sql)


def test_a_broken_server_rule_fails_with_a_short_script() -> None:
    # one table, one replica, ten steps: each example is cheap, so shrinking finishes quickly
    from tablesync.project import load_project

    project = load_project(ROOT / "sync.toml")
    projects = project.table("projects")
    import dataclasses

    small = dataclasses.replace(project, tables=(projects,),
                                ddl={"projects": project.ddl["projects"]})
    # (its own cluster, not the suite's: in /dev/shm, the TRUNCATEs between examples
    # need no disk)
    result = run_check(small, examples=40, replicas=1, steps=10, seed=3,
                       prepare=compare_the_wrong_way)
    assert not result.ok, result.summary()
    assert "conflict rule's winner" in result.message or "differs" in result.message, \
        result.message
    assert 0 < len(result.script) < 15, result.report()
    report = result.report()
    assert "Shortest failing sequence found" in report and "replica " in report
    assert result.summary().startswith("tablesync check: FAILED")


def test_the_unbroken_rule_passes(pg_dsn: str) -> None:
    result = run_check(ROOT / "sync.toml", examples=4, replicas=2, seed=3, dsn=pg_dsn)
    assert result.ok, result.report()
    assert result.examples >= 4 and result.steps > 0
