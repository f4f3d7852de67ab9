"""Issue 6 item 3: a Hypothesis state machine against the real stack.

One devserver (PostgreSQL + REST + Realtime + Auth, access tokens valid for 3 s) for the
whole run; each example gets two fresh systems (own users, own SQLite files, own engines
reaching the backend through a fault proxy each). Rules: local sqlite3 writes on A and B,
service-key REST (or SQL while the backend is down) writes into either scope, partitions
(refuse / reset / blackhole one engine's link), backend stop/start, engine restarts (with
an access token that expired while it was down). After healing everything, every replica
must equal the server's rows of its scope, with an empty queue, within CONVERGE_S seconds.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine

from faults.proxy import FaultProxy  # tests/ is on sys.path (rootdir-relative packages)
from .fuzzing import CI
from .stack import app_db, create_schema, create_users, engine_for, pg, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JWT_EXP = 3                     # seconds: several refreshes per example
CONVERGE_S = 30.0               # the bound: healing -> every replica equals the server
SIDES = ("a", "b")
TITLES = st.text(alphabet="abcdefghij XYZ", min_size=1, max_size=12)


class Stack:
    """What outlives one example: the backend, one fault proxy per side."""

    def __init__(self, dsn: str) -> None:
        create_schema(dsn)
        self.server = DevServer(dsn=dsn, jwt_exp=JWT_EXP)
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


def machine(stack: Stack) -> type[RuleBasedStateMachine]:

    class SyncStack(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            n = next(stack.examples)
            self.tmp = Path(tempfile.mkdtemp(prefix="tablesync-stateful-"))
            self.system = {s: f"ex{n}-{s}" for s in SIDES}
            self.ids = (f"ex{n}-r{i}" for i in itertools.count())
            stack.backend(True)
            create_users(stack.info, self.system.values())
            self.engines: dict[str, Engine] = {}
            self.apps = {}
            for s in SIDES:
                stack.proxies[s].set_mode("pass")
                self._start(s)
                self.apps[s] = app_db(self.tmp, self.system[s])
            self.partitioned: set[str] = set()
            self.steps: list[str] = []
            for s in SIDES:                 # a few rows on every side, so every rule has targets
                for _ in range(3):
                    self.apps[s].execute("INSERT INTO tasks (id, system_id, title) "
                                         "VALUES (?, ?, 'seed')", (next(self.ids), self.system[s]))
                for _ in range(2):
                    r = stack.http.post("/rest/v1/tasks", json={
                        "id": next(self.ids), "system_id": self.system[s], "title": "seed"})
                    assert r.status_code == 201, r.text

        # -- helpers
        def _start(self, side: str) -> None:
            e = engine_for(self.tmp, stack.via(side), self.system[side], max_retries=100)
            e.start()
            self.engines[side] = e

        def _local_ids(self, side: str) -> list[str]:
            return [r[0] for r in self.apps[side].execute(
                "SELECT id FROM tasks ORDER BY id")]

        def _server_ids(self, side: str) -> list[str]:
            return [r[0] for r in pg(stack.info.dsn, "SELECT id FROM tasks WHERE system_id = %s "
                                     "AND NOT _ts_deleted ORDER BY id", self.system[side])]

        # -- local writes (the application's own sqlite3 connection)
        @rule(side=st.sampled_from(SIDES), title=TITLES)
        def local_insert(self, side: str, title: str) -> None:
            self.steps.append('local_insert')
            self.apps[side].execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                                    (next(self.ids), self.system[side], title))

        @rule(side=st.sampled_from(SIDES), data=st.data(), title=TITLES)
        def local_update(self, side: str, data: st.DataObject, title: str) -> None:
            self.steps.append('local_update')
            ids = self._local_ids(side)
            if ids:
                rid = data.draw(st.sampled_from(ids), label="row")
                self.apps[side].execute("UPDATE tasks SET title = ?, priority = priority + 1 "
                                        "WHERE id = ?", (title, rid))

        @rule(side=st.sampled_from(SIDES), data=st.data())
        def local_delete(self, side: str, data: st.DataObject) -> None:
            self.steps.append('local_delete')
            ids = self._local_ids(side)
            if ids:
                rid = data.draw(st.sampled_from(ids), label="row")
                self.apps[side].execute("DELETE FROM tasks WHERE id = ?", (rid,))

        # -- dashboard writes (service key REST; SQL while the HTTP side is down)
        @rule(side=st.sampled_from(SIDES), kind=st.sampled_from(["insert", "update", "delete"]),
              data=st.data(), title=TITLES)
        def server_write(self, side: str, kind: str, data: st.DataObject, title: str) -> None:
            self.steps.append('server_write')
            system = self.system[side]
            if kind == "insert":
                rid = next(self.ids)
            else:
                ids = self._server_ids(side)
                if not ids:
                    return
                rid = data.draw(st.sampled_from(ids), label="server row")
            if not stack.up:
                if kind == "insert":
                    pg(stack.info.dsn, "INSERT INTO tasks (id, system_id, title) "
                       "VALUES (%s, %s, %s)", rid, system, title)
                else:
                    pg(stack.info.dsn, "UPDATE tasks SET title = %s, _ts_deleted = %s "
                       "WHERE id = %s", title, kind == "delete", rid)
                return
            if kind == "insert":
                r = stack.http.post("/rest/v1/tasks", json={"id": rid, "system_id": system,
                                                            "title": title})
            else:
                body = {"title": title, "_ts_deleted": kind == "delete"}
                r = stack.http.patch(f"/rest/v1/tasks?id=eq.{rid}", json=body)
            assert r.status_code in (201, 204), r.text

        # -- faults
        @rule(side=st.sampled_from(SIDES), kind=st.sampled_from(["refuse", "reset", "blackhole"]))
        def partition(self, side: str, kind: str) -> None:
            self.steps.append('partition')
            stack.proxies[side].set_mode(kind)
            self.partitioned.add(side)

        @precondition(lambda self: bool(self.partitioned))
        @rule(data=st.data())
        def heal(self, data: st.DataObject) -> None:
            self.steps.append('heal')
            side = data.draw(st.sampled_from(sorted(self.partitioned)), label="side")
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
            self.steps.append('restart_engine')
            self.engines.pop(side).close()
            if token_expires:                     # the stored access token dies meanwhile
                time.sleep(JWT_EXP + 0.3)
            self._start(side)

        @rule(seconds=st.sampled_from([0.0, 0.3, 1.0]))
        def let_time_pass(self, seconds: float) -> None:
            self.steps.append('let_time_pass')
            time.sleep(seconds)

        @rule()
        def heal_all_and_check(self) -> None:
            self.steps.append('heal_all_and_check')
            self.converge()

        # -- the property
        def converge(self) -> None:
            stack.backend(True)
            for s in SIDES:
                stack.proxies[s].set_mode("pass")
            self.partitioned.clear()
            for s in SIDES:
                e, system = self.engines[s], self.system[s]

                def equal() -> bool:
                    server = pg(stack.info.dsn, "SELECT id, title, status, priority FROM tasks "
                                "WHERE system_id = %s AND NOT _ts_deleted ORDER BY id", system)
                    local = self.apps[s].execute("SELECT id, title, status, priority FROM tasks "
                                                 "ORDER BY id").fetchall()
                    stats = e.store.stats()
                    return (server == local and stats.depth == 0 and stats.parked == 0)

                try:
                    wait_for(equal, timeout=CONVERGE_S, what=f"replica {system} == server")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; engine status {e.status}") from None

        def teardown(self) -> None:
            try:
                self.converge()
                if os.environ.get("STATEFUL_VERBOSE"):
                    rows = {s: len(self._server_ids(s)) for s in SIDES}
                    print(f"example steps={self.steps} server rows={rows}")
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
