"""supabase.sql on the real PostgreSQL: tables, trigger, RLS, publication, apply function."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tablesync.project import Project
from tablesync.sql import postgres

pytestmark = pytest.mark.postgres


def _row(i: str, hlc: int, origin: str = "A", deleted: bool = False, base: tuple[int, str] = (0, ""),
         **cols: Any) -> dict[str, Any]:
    data = {"id": i, "system_id": "system-a", "name": f"n{hlc}"}
    data.update(cols)
    return {**data, "_ts_hlc": hlc, "_ts_origin": origin, "_ts_deleted": deleted,
            "_ts_base_hlc": base[0], "_ts_base_origin": base[1]}


def test_supabase_sql_is_idempotent(pg: Any, example: Project) -> None:
    pg.execute(postgres.schema_sql(example.tables, example.ddl).encode())
    pubs = {r[0] for r in pg.execute(
        "SELECT tablename FROM pg_publication_tables WHERE pubname='supabase_realtime'")}
    assert pubs == {"projects", "tasks", "results", "tablesync_exits"}
    rls = dict(pg.execute("SELECT relname, relrowsecurity FROM pg_class WHERE relname IN "
                          "('projects','tasks','results')").fetchall())
    assert rls == {"projects": True, "tasks": True, "results": True}


def test_apply_outcomes(pg: Any, apply: Any) -> None:
    out = apply(pg, "projects", [_row("p1", 100), _row("p1", 100), _row("p1", 50, "B")])
    assert [o["outcome"] for o in out] == ["applied", "duplicate", "superseded"]
    assert out[2]["row"]["_ts_hlc"] == 100 and out[2]["row"]["name"] == "n100"
    assert out[0]["id"] == "p1" and out[0]["row"] is None
    seq, xid = pg.execute("SELECT _ts_seq, _ts_xid FROM projects").fetchone()
    assert seq is not None and xid is not None


def test_apply_per_row_errors_do_not_fail_batch(pg: Any, apply: Any) -> None:
    rows = [{"id": "x"}, "not an object", _row("p2", 10),
            {**_row("t1", 10), "project_id": "missing", "title": "t"}]
    rows[0] = {**_row("p3", 5), "name": None}
    out = apply(pg, "projects", rows[:3])
    assert [o["outcome"] for o in out] == ["error", "error", "applied"]
    assert "23502" in out[0]["message"]
    out = apply(pg, "tasks", [{k: v for k, v in rows[3].items() if k != "name"}])
    assert out[0]["outcome"] == "error" and "23503" in out[0]["message"]


def test_edit_wins_restores_and_lww_keeps_delete(pg: Any, apply: Any) -> None:
    task = {"system_id": "system-a", "title": "t"}
    assert apply(pg, "projects", [_row("p", 1)])[0]["outcome"] == "applied"
    for table in ("tasks", "results"):
        extra = task if table == "tasks" else {"system_id": "system-a", "task_id": "t0"}
        if table == "results":
            apply(pg, "tasks", [{"id": "t0", **task, **_row("t0", 1)}])
        base = {"id": "r", **extra, "_ts_origin": "A"}
        apply(pg, table, [{**base, "_ts_hlc": 10}])
        # B deletes having seen (10, A); C edits concurrently (also saw only 10, A) at 12
        apply(pg, table, [{**base, "_ts_hlc": 20, "_ts_origin": "B", "_ts_deleted": True,
                           "_ts_base_hlc": 10, "_ts_base_origin": "A"}])
        out = apply(pg, table, [{**base, "_ts_hlc": 12, "_ts_origin": "C",
                                 "_ts_base_hlc": 10, "_ts_base_origin": "A"}])
        deleted = pg.execute(f"SELECT _ts_deleted FROM {table} WHERE id='r'").fetchone()[0]
        if table == "tasks":  # edit-wins
            assert out[0]["outcome"] == "applied" and deleted is False
        else:
            assert out[0]["outcome"] == "superseded" and deleted is True


def test_stamp_trigger_versions_plain_writes(pg: Any, apply: Any) -> None:
    pg.execute("INSERT INTO projects (id, system_id, name) VALUES ('d', 'system-a', 'dash')")
    hlc, origin = pg.execute("SELECT _ts_hlc, _ts_origin FROM projects").fetchone()
    assert origin == "server" and hlc > 1 << 40
    pg.execute("UPDATE projects SET name = 'x'")
    hlc2, base = pg.execute("SELECT _ts_hlc, _ts_base_hlc FROM projects").fetchone()
    assert hlc2 > hlc and base == hlc


def _jwt(conn: Any, system: str) -> None:
    claims = json.dumps({"role": "authenticated", "app_metadata": {"system_id": system}})
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))
    conn.execute("SET ROLE authenticated")


def test_rls_forbidden_per_row(pg: Any, apply: Any) -> None:
    apply(pg, "projects", [{**_row("other", 5), "system_id": "system-b"}])
    _jwt(pg, "system-a")
    # origin = the JWT's system id: any other origin is refused (bounded versions)
    out = apply(pg, "projects", [{**_row("mine", 5, "system-a")},
                                 {**_row("theirs", 5, "system-a"), "system_id": "system-b"},
                                 {**_row("other", 9, "system-a")}])
    assert [o["outcome"] for o in out] == ["applied", "forbidden", "forbidden"]
    assert pg.execute("SELECT count(*) FROM projects").fetchone()[0] == 1
    assert pg.execute("SELECT tablesync_watermark()").fetchone()[0] > 0
    pg.execute("RESET ROLE")


def _full(i: str, hlc: int, origin: str = "A", **cols: Any) -> dict[str, Any]:
    return _row(i, hlc, origin, description=None, created_at=None, **cols)


def test_set_based_apply_outcomes_and_fallback(pg: Any, apply: Any) -> None:
    """Full rows with distinct ids (the set-based path): per-row outcomes in input order;
    one failing row in the batch makes the whole batch fall back to the per-row path."""
    notes: list[str] = []
    pg.add_notice_handler(lambda d: notes.append(str(d.message_primary)))
    pg.execute("SET client_min_messages = debug1")
    apply(pg, "projects", [_full("a", 10), _full("b", 10), _full("c", 10)])
    out = apply(pg, "projects", [_full("new", 5), _full("a", 10), _full("b", 9, "Z"),
                                 _full("c", 10, "B")])
    assert not [n for n in notes if "per-row apply" in n]       # the set-based path
    assert [o["outcome"] for o in out] == ["applied", "duplicate", "superseded", "applied"]
    assert [o["id"] for o in out] == ["new", "a", "b", "c"]
    assert out[2]["row"]["_ts_hlc"] == 10 and out[2]["row"]["_ts_origin"] == "A"
    assert pg.execute("SELECT _ts_origin FROM projects WHERE id = 'c'").fetchone() == ("B",)
    _jwt(pg, "system-a")
    me = "system-a"                 # a signed-in pusher's origin is its own system id
    out = apply(pg, "projects", [_full("d", 5, me), {**_full("e", 5, me), "system_id": "system-b"},
                                 _full("a", 11, me), _full("f", 5, me, name=None)])
    assert [o["outcome"] for o in out] == ["applied", "forbidden", "applied", "error"]
    assert [n for n in notes if "per-row apply" in n]           # fell back
    pg.execute("RESET ROLE")
    pg.execute("RESET client_min_messages")
    rows = pg.execute("SELECT id, _ts_hlc FROM projects ORDER BY id").fetchall()
    assert rows == [("a", 11), ("b", 10), ("c", 10), ("d", 5), ("new", 5)]


def _page_plan(conn: Any, system: str, cursor: int, after: int) -> str:
    """EXPLAIN of the devserver's catch-up page query, as the system's user (RLS on)."""
    claims = json.dumps({"role": "authenticated", "app_metadata": {"system_id": system}})
    with conn.transaction():
        conn.execute("SELECT set_config('role', 'authenticated', true), "
                     "set_config('request.jwt.claims', %s, true)", (claims,))
        rows = conn.execute(
            "EXPLAIN SELECT count(*), coalesce(json_agg(_s), '[]')::text FROM (SELECT * FROM "
            "public.tasks AS _t WHERE _t.system_id = %s AND _t._ts_xid >= %s AND "
            "_t._ts_seq > %s ORDER BY _t._ts_seq ASC LIMIT 1000) AS _s",
            (system, cursor, after)).fetchall()
    return "\n".join(r[0] for r in rows)


def test_catch_up_pages_read_one_scope_in_sequence_order(pg: Any, example: Project) -> None:
    # an older deployment's indexes are replaced when supabase.sql is run again
    pg.execute("CREATE INDEX tablesync_tasks_seq ON public.tasks (_ts_seq)")
    pg.execute("CREATE INDEX tablesync_tasks_scope_xid ON public.tasks (system_id, _ts_xid)")
    pg.execute(postgres.schema_sql(example.tables, example.ddl).encode())
    names = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE tablename = "
                                      "'tasks'")}
    assert names == {"tasks_pkey", "tablesync_tasks_scope_seq", "tablesync_tasks_scope_xid_seq"}
    load = ("INSERT INTO public.tasks (id, system_id, title) SELECT %s || g, %s, 't' FROM "
            "generate_series(1, 20000) g")
    pg.execute(load, ("a-", "system-a"))
    pg.execute("ANALYZE public.tasks")
    # system-b's rows arrive after the statistics were taken (autoanalyze not yet run)
    pg.execute(load, ("b-", "system-b"))
    (first_b,) = pg.execute("SELECT min(_ts_seq) FROM public.tasks WHERE system_id = "
                            "'system-b'").fetchone()
    for after in (0, first_b + 10_000):
        plan = _page_plan(pg, "system-b", 0, after)
        assert "tablesync_tasks_scope_seq" in plan and "Sort" not in plan, plan
    pg.execute("ANALYZE public.tasks")
    plan = _page_plan(pg, "system-a", 0, 0)
    assert "tablesync_tasks_scope_seq" in plan and "Sort" not in plan, plan
    (xid,) = pg.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    pg.execute("UPDATE public.tasks SET title = 'u' WHERE id IN ('b-5', 'b-17000')")
    assert "tablesync_tasks_scope_xid_seq" in _page_plan(pg, "system-b", xid, 0)


def test_a_plain_delete_becomes_a_tombstone_that_syncs(pg: Any, apply: Any) -> None:
    """Dashboard/REST DELETEs are kept as server-versioned tombstones (base = what they
    deleted); deleting a tombstone, or `tablesync.hard_delete = on`, removes the row."""
    assert apply(pg, "projects", [_row("p", 100), _row("q", 100)])[0]["outcome"] == "applied"
    seq0 = pg.execute("SELECT max(_ts_seq) FROM projects").fetchone()[0]
    assert pg.execute("DELETE FROM projects WHERE id = 'p'").rowcount == 0  # kept
    row = pg.execute("SELECT _ts_deleted, _ts_hlc, _ts_origin, _ts_base_hlc, _ts_base_origin, "
                     "_ts_seq, name FROM projects WHERE id = 'p'").fetchone()
    assert row[0] is True and row[1] > 1 << 40 and row[2] == "server"
    assert row[3:5] == (100, "A") and row[5] > seq0 and row[6] == "n100"
    # an older concurrent edit from a replica does not undo it; the catch-up sees it
    out = apply(pg, "projects", [_row("p", 90, "B", base=(50, "B"))])
    assert out[0]["outcome"] == "superseded" and out[0]["row"]["_ts_deleted"] is True
    pg.execute("DELETE FROM projects WHERE id = 'p'")            # a tombstone: purged
    pg.execute("SET tablesync.hard_delete = 'on'")
    pg.execute("DELETE FROM projects WHERE id = 'q'")            # purged directly
    pg.execute("RESET tablesync.hard_delete")
    assert pg.execute("SELECT count(*) FROM projects").fetchone()[0] == 0


def test_concurrent_overwrites_are_logged_on_the_server(pg: Any, apply: Any) -> None:
    """The server's conflict log: a push that beats a version its writer had not seen."""
    rows = [_row("p", 100), _row("q", 100), _row("r", 100)]
    assert [o["outcome"] for o in apply(pg, "projects", rows)] == ["applied"] * 3
    pg.execute("UPDATE projects SET name = 'dash' WHERE id = 'r'")     # a dashboard edit
    (dash_hlc,) = pg.execute("SELECT _ts_hlc FROM projects WHERE id = 'r'").fetchone()
    out = apply(pg, "projects", [
        _row("p", 120, "B", base=(100, "A")),       # B had seen A's write: sequential
        _row("q", 120, "B", base=(90, "B")),        # B had not: concurrent, logged
        _row("r", dash_hlc + 5, "B", base=(100, "A"))])   # B had not seen the dashboard's
    assert [o["outcome"] for o in out] == ["applied"] * 3
    log = pg.execute("SELECT table_name, record_id, scope, winner ->> '_ts_origin', "
                     "(loser ->> '_ts_hlc')::bigint, loser ->> '_ts_origin', loser ->> 'name' "
                     "FROM tablesync_conflicts ORDER BY record_id").fetchall()
    assert log == [("projects", "q", "system-a", "B", 100, "A", "n100"),
                   ("projects", "r", "system-a", "B", dash_hlc, "server", "dash")]
    # a plain delete (tombstone) and later dashboard edits are not conflicts
    pg.execute("DELETE FROM projects WHERE id = 'p'")
    pg.execute("UPDATE projects SET name = 'again' WHERE id = 'q'")
    assert pg.execute("SELECT count(*) FROM tablesync_conflicts").fetchone() == (2,)
    # as a signed-in system: its own scope's rows only, written only by the trigger;
    # the push itself (RLS on) still logs through the SECURITY DEFINER trigger
    _jwt(pg, "system-b")
    assert pg.execute("SELECT count(*) FROM tablesync_conflicts").fetchone() == (0,)
    with pytest.raises(Exception, match="permission denied"):
        pg.execute("INSERT INTO tablesync_conflicts (table_name, record_id, winner, loser, "
                   "reason) VALUES ('x', 'y', '{}', '{}', 'forged')")
    pg.execute("RESET ROLE")
    pg.execute("ROLLBACK") if pg.info.transaction_status else None
    _jwt(pg, "system-a")
    out = apply(pg, "projects", [_row("r", dash_hlc + 9, "system-a", base=(5, "system-a"))])
    assert out[0]["outcome"] == "applied"
    assert pg.execute("SELECT count(*) FROM tablesync_conflicts").fetchone() == (3,)
    pg.execute("RESET ROLE")


def test_a_record_leaving_a_scope_is_logged_for_that_scope_only(pg: Any, apply: Any) -> None:
    """Re-scoping a row on the server (dashboard, service role) records an exit that the
    old scope can read (RLS hides the row itself from it now) and the new one cannot."""
    assert apply(pg, "projects", [_row("p", 100), _row("q", 100)])[0]["outcome"] == "applied"
    pg.execute("UPDATE projects SET name = 'renamed' WHERE id = 'p'")      # not a move
    assert pg.execute("SELECT count(*) FROM tablesync_exits").fetchone() == (0,)
    pg.execute("UPDATE projects SET system_id = 'system-b' WHERE id = 'p'")
    row = pg.execute("SELECT _ts_hlc, _ts_origin, _ts_xid FROM projects WHERE id = 'p'").fetchone()
    exits = pg.execute("SELECT table_name, record_id, scope, _ts_hlc, _ts_origin, _ts_xid, "
                       "_ts_seq > 0 FROM tablesync_exits").fetchall()
    assert exits == [("projects", "p", "system-a", row[0], row[1], row[2], True)]
    _jwt(pg, "system-a")
    assert pg.execute("SELECT record_id FROM tablesync_exits").fetchall() == [("p",)]
    assert pg.execute("SELECT count(*) FROM projects").fetchone() == (1,)  # q only
    with pytest.raises(Exception, match="permission denied"):
        pg.execute("INSERT INTO tablesync_exits (table_name, record_id, scope, _ts_hlc, "
                   "_ts_origin) VALUES ('projects', 'q', 'system-a', 1, 'forged')")
    pg.execute("ROLLBACK") if pg.info.transaction_status else None
    pg.execute("RESET ROLE")
    _jwt(pg, "system-b")
    assert pg.execute("SELECT count(*) FROM tablesync_exits").fetchone() == (0,)
    # a system cannot move its own row away: RLS refuses the new scope
    pg.execute("RESET ROLE")
    _jwt(pg, "system-a")
    out = apply(pg, "projects", [{**_row("q", 200), "system_id": "system-b"}])
    assert out[0]["outcome"] == "forbidden"
    pg.execute("RESET ROLE")
    assert pg.execute("SELECT count(*) FROM tablesync_exits").fetchone() == (1,)
