"""Issues 6 and 11: a Hypothesis state machine against the real stack.

One devserver (PostgreSQL + REST + Realtime + Auth, access tokens valid for 3 s) for the
whole run; each example gets two fresh systems (own users, own SQLite files, own engines
reaching the backend through a fault proxy each). Rules: local sqlite3 writes on A and B
to ``tasks`` (edit-wins) and ``results`` (last-write-wins), dashboard writes into either
scope (deletes on both policies), records re-assigned on the server from one system to
the other (while the owner may have pending edits), pushes applied whose acknowledgement
is lost followed by an engine restart (killed between push and ack), partitions (refuse /
reset / blackhole one engine's link), backend stop/start, engine restarts (with an access
token that expired while it was down).

Invariants, after healing everything, within CONVERGE_S seconds:
* every replica equals the server's rows of its scope, with an empty queue and nothing
  parked;
* nothing lost (issue 11): every local write (each writes a unique token) is the final
  state of its record on the server, or was seen by a later write (some later write, local
  or dashboard, read it just before overwriting it), or is in a conflict log (a replica's
  ``_tablesync_conflicts`` or the server's ``tablesync_conflicts``). A local delete counts
  as kept when the record ends deleted or a conflict entry holds it as the losing side.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tablesync.clock import ManualClock
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine

from faults.proxy import FaultProxy  # tests/ is on sys.path (rootdir-relative packages)
from .fuzzing import CI
from .stack import app_db, create_schema, create_users, engine_for, pg, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JWT_EXP = 3                     # seconds: several refreshes per example
CONVERGE_S = 30.0               # the bound: healing -> every replica equals the server
SIDES = ("a", "b")
TABLES = ("tasks", "results")               # edit-wins, last-write-wins
FIELD = {"tasks": "title", "results": "output"}
# rows are picked by index from what exists now: always one draw, whatever the state
# (a draw that depends on the database would make Hypothesis's data tree inconsistent)
PICK = st.integers(min_value=0, max_value=10**6)


class Stack:
    """What outlives one example: the backend, one fault proxy per side."""

    def __init__(self, dsn: str) -> None:
        create_schema(dsn)
        # tokens expire in real time too; restart_engine jumps the clock past an expiry
        self.clock = ManualClock(follow_real_time=True)
        self.server = DevServer(dsn=dsn, jwt_exp=JWT_EXP, enable_faults=True, clock=self.clock)
        self.info = self.server.start()
        self.up = True
        self.proxies = {s: FaultProxy("127.0.0.1", self.server.port) for s in SIDES}
        for p in self.proxies.values():
            p.start()
        self.examples = itertools.count()
        self.http = httpx.Client(base_url=self.info.url, timeout=10, headers={
            "apikey": self.info.service_key, "Authorization": f"Bearer {self.info.service_key}",
            "Content-Type": "application/json", "Prefer": "return=minimal"})

    def via(self, side: str) -> DevServerInfo:
        i = self.info
        return DevServerInfo(url=self.proxies[side].url, anon_key=i.anon_key,
                             service_key=i.service_key, dsn=i.dsn)

    def backend(self, up: bool) -> None:
        if up and not self.up:
            self.server.start()
        elif not up and self.up:
            self.server.stop()
        self.up = up

    def close(self) -> None:
        self.http.close()
        for p in self.proxies.values():
            p.stop()
        self.server.stop()


class Write(NamedTuple):
    """One local write: ``token`` is the unique value it wrote (``DEL:<n>`` for a delete)."""

    side: str
    table: str
    rid: str
    token: str


def machine(stack: Stack) -> type[RuleBasedStateMachine]:

    class SyncStack(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            n = next(stack.examples)
            self.tmp = Path(tempfile.mkdtemp(prefix="tablesync-stateful-"))
            self.system = {s: f"ex{n}-{s}" for s in SIDES}
            self.ids = (f"ex{n}-r{i}" for i in itertools.count())
            self.tokens = (f"ex{n}-v{i}" for i in itertools.count())
            stack.backend(True)
            stack.server.faults.clear()
            create_users(stack.info, self.system.values())
            self.engines: dict[str, Engine] = {}
            self.apps = {}
            for s in SIDES:
                stack.proxies[s].set_mode("pass")
                self._start(s)
                self.apps[s] = app_db(self.tmp, self.system[s])
            self.partitioned: set[str] = set()
            self.steps: list[str] = []
            self.writes: list[Write] = []       # local writes, in order
            self.seen: set[str] = set()         # tokens some later write read first
            for s in SIDES:                 # a few rows on every side, so every rule has targets
                for _ in range(3):
                    self._local_insert(s, "tasks")
                self._local_insert(s, "results")
                for _ in range(2):
                    self._dashboard_insert(s, "tasks")

        # -- helpers
        def _start(self, side: str) -> None:
            e = engine_for(self.tmp, stack.via(side), self.system[side], max_retries=100,
                           clock=stack.clock)
            e.start()
            self.engines[side] = e

        def _local_ids(self, side: str, table: str) -> list[str]:
            return [r[0] for r in self.apps[side].execute(f"SELECT id FROM {table} ORDER BY id")]

        def _server_ids(self, side: str, table: str) -> list[str]:
            return [r[0] for r in pg(stack.info.dsn, f"SELECT id FROM {table} WHERE system_id "
                                     "= %s AND NOT _ts_deleted ORDER BY id", self.system[side])]

        def _local_insert(self, side: str, table: str) -> None:
            app, system, rid, tok = self.apps[side], self.system[side], next(self.ids), next(
                self.tokens)
            if table == "tasks":
                app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                            (rid, system, tok))
            else:
                tasks = self._local_ids(side, "tasks")
                if not tasks:                   # a result needs a task (a foreign key)
                    return
                app.execute("INSERT INTO results (id, system_id, task_id, output) VALUES "
                            "(?, ?, ?, ?)", (rid, system, tasks[0], tok))
            self.writes.append(Write(side, table, rid, tok))

        def _dashboard_insert(self, side: str, table: str) -> None:
            rid, system = next(self.ids), self.system[side]
            if table == "tasks":
                r = stack.http.post("/rest/v1/tasks", json={"id": rid, "system_id": system,
                                                            "title": next(self.tokens)})
                assert r.status_code == 201, r.text

        # -- local writes (the application's own sqlite3 connection)
        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES))
        def local_insert(self, side: str, table: str) -> None:
            self.steps.append(f"local_insert {side} {table}")
            self._local_insert(side, table)

        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES), pick=PICK)
        def local_update(self, side: str, table: str, pick: int) -> None:
            ids = self._local_ids(side, table)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            self.steps.append(f"local_update {side} {table} {rid}")
            self._overwrite(side, table, rid, delete=False)

        def _overwrite(self, side: str, table: str, rid: str, *, delete: bool) -> None:
            """The app updates (a new token) or deletes ``rid``, in one transaction with
            the read of the value it overwrites (that value was seen by this write)."""
            app, col, tok = self.apps[side], FIELD[table], next(self.tokens)
            app.execute("BEGIN IMMEDIATE")
            row = app.execute(f"SELECT {col} FROM {table} WHERE id = ?", (rid,)).fetchone()
            if row is not None:
                self.seen.add(row[0])
                if delete:
                    app.execute(f"DELETE FROM {table} WHERE id = ?", (rid,))
                    tok = f"DEL:{tok}"
                else:
                    app.execute(f"UPDATE {table} SET {col} = ? WHERE id = ?", (tok, rid))
                self.writes.append(Write(side, table, rid, tok))
            app.execute("COMMIT")

        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES), pick=PICK)
        def local_delete(self, side: str, table: str, pick: int) -> None:
            ids = self._local_ids(side, table)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            self.steps.append(f"local_delete {side} {table} {rid}")
            self._overwrite(side, table, rid, delete=True)

        # -- dashboard writes (SQL in one transaction: what it read is what it overwrote;
        #    the stamp and soft-delete triggers run as for REST)
        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES),
              kind=st.sampled_from(["insert", "update", "delete"]), pick=PICK)
        def server_write(self, side: str, table: str, kind: str, pick: int) -> None:
            if kind == "insert":
                if table == "tasks":
                    self.steps.append(f"server_insert {side}")
                    pg(stack.info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES "
                       "(%s, %s, %s)", next(self.ids), self.system[side], next(self.tokens))
                return
            ids = self._server_ids(side, table)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            self.steps.append(f"server_{kind} {side} {table} {rid}")
            col = FIELD[table]
            with psycopg.connect(stack.info.dsn) as conn:
                row = conn.execute(f"SELECT {col} FROM {table} WHERE id = %s AND NOT "
                                   "_ts_deleted FOR UPDATE", (rid,)).fetchone()
                if row is None:
                    return
                self.seen.add(row[0])
                if kind == "update":
                    conn.execute(f"UPDATE {table} SET {col} = %s WHERE id = %s",
                                 (next(self.tokens), rid))
                else:
                    conn.execute(f"DELETE FROM {table} WHERE id = %s", (rid,))

        @rule(frm=st.sampled_from(SIDES), table=st.sampled_from(TABLES), pick=PICK)
        def reassign(self, frm: str, table: str, pick: int) -> None:
            """The dashboard moves a record to the other system (its owner may have
            pending edits of it)."""
            ids = self._server_ids(frm, table)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            self.steps.append(f"reassign {table} {rid} {frm}->other")
            self._move(frm, table, rid)

        def _move(self, frm: str, table: str, rid: str) -> None:
            to = SIDES[1 - SIDES.index(frm)]
            with psycopg.connect(stack.info.dsn) as conn:
                row = conn.execute(f"SELECT {FIELD[table]} FROM {table} WHERE id = %s FOR "
                                   "UPDATE", (rid,)).fetchone()
                if row is None:
                    return
                self.seen.add(row[0])
                conn.execute(f"UPDATE {table} SET system_id = %s WHERE id = %s",
                             (self.system[to], rid))

        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES), pick=PICK,
              cut=st.sampled_from(["refuse", "blackhole", None]))
        def reassign_while_pending(self, side: str, table: str, pick: int,
                                   cut: str | None) -> None:
            """The owner edits a record it cannot push yet (its link is cut, or not), and
            the dashboard moves that record to the other system."""
            ids = sorted(set(self._local_ids(side, table)) & set(self._server_ids(side, table)))
            if not ids:
                return
            rid = ids[pick % len(ids)]
            if cut is not None:
                stack.proxies[side].set_mode(cut)
                self.partitioned.add(side)
            self.steps.append(f"reassign_while_pending {side} {table} {rid} cut={cut}")
            self._overwrite(side, table, rid, delete=False)
            self._move(side, table, rid)

        # -- faults
        @precondition(lambda self: stack.up)
        @rule(side=st.sampled_from(SIDES), table=st.sampled_from(TABLES))
        def killed_between_push_and_ack(self, side: str, table: str) -> None:
            """The next push is applied but its answer is lost; the engine is killed."""
            self.steps.append(f"killed_between_push_and_ack {side}")
            stack.server.faults.add("rest", 502, count=1, after=True,
                                    path_prefix=f"/rest/v1/rpc/tablesync_apply_{table}")
            self._local_insert(side, table)
            deadline = time.monotonic() + 3
            while stack.server.faults.pending and time.monotonic() < deadline:
                time.sleep(0.02)
            stack.server.faults.clear()
            self.engines.pop(side).close()
            self._start(side)

        @rule(side=st.sampled_from(SIDES), kind=st.sampled_from(["refuse", "reset", "blackhole"]))
        def partition(self, side: str, kind: str) -> None:
            self.steps.append(f"partition {side} {kind}")
            stack.proxies[side].set_mode(kind)
            self.partitioned.add(side)

        @precondition(lambda self: bool(self.partitioned))
        @rule(pick=PICK)
        def heal(self, pick: int) -> None:
            cut = sorted(self.partitioned)
            side = cut[pick % len(cut)]
            self.steps.append(f"heal {side}")
            stack.proxies[side].set_mode("pass")
            self.partitioned.discard(side)

        @precondition(lambda self: stack.up)
        @rule()
        def backend_down(self) -> None:
            self.steps.append('backend_down')
            stack.backend(False)

        @precondition(lambda self: not stack.up)
        @rule()
        def backend_up(self) -> None:
            self.steps.append('backend_up')
            stack.backend(True)

        @rule(side=st.sampled_from(SIDES), token_expires=st.booleans())
        def restart_engine(self, side: str, token_expires: bool) -> None:
            self.steps.append(f"restart_engine {side}")
            self.engines.pop(side).close()
            if token_expires:                     # the stored access token dies meanwhile
                stack.clock.advance(JWT_EXP + 0.3)
            self._start(side)

        @rule(seconds=st.sampled_from([0.0, 0.3, 1.0]))
        def let_time_pass(self, seconds: float) -> None:
            self.steps.append('let_time_pass')
            time.sleep(seconds)

        @rule()
        def heal_all_and_check(self) -> None:
            self.steps.append('heal_all_and_check')
            self.converge()

        # -- the properties
        def converge(self) -> None:
            stack.backend(True)
            stack.server.faults.clear()
            for s in SIDES:
                stack.proxies[s].set_mode("pass")
            self.partitioned.clear()
            for s in SIDES:
                e, system = self.engines[s], self.system[s]

                def equal() -> bool:
                    for table in TABLES:
                        col = FIELD[table]
                        server = pg(stack.info.dsn, f"SELECT id, {col} FROM {table} WHERE "
                                    "system_id = %s AND NOT _ts_deleted ORDER BY id", system)
                        local = self.apps[s].execute(f"SELECT id, {col} FROM {table} "
                                                     "ORDER BY id").fetchall()
                        if server != local:
                            return False
                    stats = e.store.stats()
                    return stats.depth == 0 and stats.parked == 0

                try:
                    wait_for(equal, timeout=CONVERGE_S, what=f"replica {system} == server")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; engine status {e.status}; parked "
                                         f"{e.store.parked()}; steps {self.steps}") from None
            self.nothing_lost()

        def nothing_lost(self) -> None:
            """Every local write is final, seen by a later write, or in a conflict log."""
            final = {}
            for table in TABLES:
                for rid, value, deleted in pg(
                        stack.info.dsn, f"SELECT id, {FIELD[table]}, _ts_deleted FROM "
                        f"{table} WHERE id LIKE %s", self.system["a"].rsplit("-", 1)[0] + "-%"):
                    final[(table, rid)] = (value, deleted)
            logged: set[str] = set()            # losing values, and "DEL:<table>:<id>"
            for table, rid, loser in self._logged_losers():
                if loser.get("deleted") or loser.get("_ts_deleted"):
                    logged.add(f"DEL:{table}:{rid}")
                data = loser.get("data", loser)
                value = data.get(FIELD[table]) if isinstance(data, dict) else None
                if value is not None:
                    logged.add(value)
            lost = []
            for w in self.writes:
                value, deleted = final.get((w.table, w.rid), (None, True))
                if w.token.startswith("DEL:"):
                    kept = deleted or f"DEL:{w.table}:{w.rid}" in logged
                else:
                    kept = ((value == w.token and not deleted) or w.token in self.seen
                            or w.token in logged)
                if not kept:
                    lost.append(w)
            assert not lost, (f"local writes lost without a trace: {lost}; final "
                              f"{[(w, final.get((w.table, w.rid))) for w in lost]}; "
                              f"steps {self.steps}")

        def _logged_losers(self) -> list[tuple[str, str, dict[str, Any]]]:
            out = []
            for s in SIDES:
                for table, rid, loser in self.apps[s].execute(
                        "SELECT table_name, record_id, loser FROM _tablesync_conflicts"):
                    out.append((table, rid, json.loads(loser)))
            for table, rid, loser in pg(stack.info.dsn, "SELECT table_name, record_id, loser "
                                        "FROM tablesync_conflicts"):
                out.append((table, rid, loser))
            return out

        def teardown(self) -> None:
            try:
                self.converge()
                if os.environ.get("STATEFUL_VERBOSE"):
                    print(f"example steps={self.steps} writes={len(self.writes)}")
            finally:
                for e in self.engines.values():
                    e.close()
                for c in self.apps.values():
                    c.close()
                shutil.rmtree(self.tmp, ignore_errors=True)

    return SyncStack


def test_replicas_converge_under_writes_partitions_restarts_and_expiry(pg_dsn: str) -> None:
    stack = Stack(pg_dsn)
    try:
        run_state_machine_as_test(machine(stack), settings=settings(
            max_examples=4 if CI else int(os.environ.get("STATEFUL_EXAMPLES", 8)),
            stateful_step_count=12 if CI else 20, deadline=None,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.verbose if os.environ.get("STATEFUL_VERBOSE") else Verbosity.normal,
            # no shrinking: each step drives real processes; the printed steps are the repro
            phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    finally:
        stack.close()
