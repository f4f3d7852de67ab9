"""Network faults: the engine behind the fault proxy, and a backend answering 5xx/429.

Every test runs a real engine (REST + Realtime) against the devserver on the real
PostgreSQL, through ``faults.proxy.FaultProxy``: connection resets, delays, blackholes
(the REST client's timeout turns them into failures), a WebSocket cut mid-frame, and
the devserver's fault hooks answering 500, 503 and 429 with Retry-After. Each test ends
with :func:`assert_converged`: queue drained, nothing parked, server == replica.

Retry timing is measured on the proxy's request/connection log with
``faults.schedule``. Most tests use a scaled policy (``Backoff(base=0.1)``: 0.1, 0.2,
0.4, 0.8 s, offline every 1.5 s) to stay fast; ``test_default_backoff_schedule_measured``
(slow) measures the real default, 1, 2, 4, 8 s.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from faults.backend import BackendFaults
from faults.proxy import FaultProxy
from faults.schedule import assert_backoff, backoff_schedule, gaps, windows
from tablesync.backoff import Backoff
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.project import load_project
from tablesync.remote.realtime import RealtimeClient
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.vault import Secret, Vault

from helpers import wait_for

from . import stack

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
SYSTEM = "system-a"
PUSH = "POST /rest/v1/rpc/tablesync_apply_tasks"
BASE = 0.1                                   # scaled backoff: 0.1, 0.2, 0.4, 0.8 s
OFFLINE = 1.5
SLACK = 0.35                                 # a shared 2-core machine: generous upper bound
WAIT = 15.0                                  # default wait_for timeout of these fault tests



@pytest.fixture
def backend(pg_dsn: str) -> Iterator[DevServer]:
    stack.create_schema(pg_dsn)
    srv = DevServer(dsn=pg_dsn, enable_faults=True)
    srv.start()
    with RestRemote(srv.info.url, srv.info.anon_key) as admin:
        admin.admin_create_user(Secret(srv.info.service_key), f"{SYSTEM}@example.com",
                                Secret("pw-" + SYSTEM), {"system_id": SYSTEM})
    yield srv
    srv.stop()


@pytest.fixture
def proxy(backend: DevServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", int(backend.info.url.rsplit(":", 1)[1])) as p:
        yield p


@pytest.fixture
def faults(backend: DevServer) -> Iterator[BackendFaults]:
    with BackendFaults(backend.info.url, backend.info.service_key) as f:
        yield f


def make_engine(tmp: Path, info: DevServerInfo, url: str, *, realtime: bool = True,
                backoff: Backoff | None = None, timeout: float = 2.0) -> Engine:
    """An engine whose REST and Realtime traffic goes to ``url`` (the proxy)."""
    cfg = tmp / "a.toml"
    cfg.write_text(
        f'[system]\nid = "{SYSTEM}"\ndatabase = "{tmp / "a.db"}"\n'
        f'[supabase]\nurl = "{url}"\nanon_key = "{info.anon_key}"\n'
        f'email = "{SYSTEM}@example.com"\n'
        f"[sync]\ninterval = 1.0\ndebounce = 0.01\npoll_interval = 1.0\n"
        f"realtime = {str(realtime).lower()}\n"
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp / "auth.json"}"\n'
        f'conflict_log = "{tmp / "conflicts.log"}"\n[tables.projects]' + TABLES)
    project = load_project(cfg)
    remote = RestRemote(url, info.anon_key, tables={t.name: t for t in project.tables},
                        timeout=timeout)
    session = Session(remote, Vault(tmp / "auth.json"), project=url,
                      email=f"{SYSTEM}@example.com", password=Secret("pw-" + SYSTEM))
    remote.tokens = session

    def factory(*args: Any, **kw: Any) -> RealtimeClient:
        return RealtimeClient(*args, heartbeat=1.0, join_timeout=3.0,
                              backoff=Backoff(base=0.2, cap=1.0, max_retries=50), **kw)

    return Engine(project, remote=remote, session=session,
                  realtime_factory=factory if realtime else None, own_remote=True,
                  backoff=backoff or Backoff(base=BASE, cap=8 * BASE, max_retries=5,
                                             offline_interval=OFFLINE))


def app(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "a.db", isolation_level=None, timeout=30)


def pg(info: DevServerInfo, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def insert_local(tmp: Path, ids: list[str], title: str = "local") -> None:
    conn = app(tmp)
    try:
        for rid in ids:
            conn.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                         (rid, SYSTEM, title))
    finally:
        conn.close()


def insert_server(info: DevServerInfo, ids: list[str]) -> None:
    for rid in ids:
        pg(info, "INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, 'server')",
           rid, SYSTEM)


def assert_converged(e: Engine, tmp: Path, info: DevServerInfo, timeout: float = 30.0) -> None:
    """Queue drained, nothing parked, and the replica holds exactly the server's rows."""
    def state() -> str:
        st = e.store.stats()
        server = set(pg(info, "SELECT id, title, _ts_hlc FROM tasks WHERE NOT _ts_deleted"))
        conn = app(tmp)
        try:
            local = set(conn.execute(
                "SELECT t.id, t.title, m.hlc FROM tasks t JOIN _tablesync_meta m "
                "ON m.table_name = 'tasks' AND m.record_id = t.id"))
        finally:
            conn.close()
        if st.depth or st.parked or server != local:
            return (f"depth {st.depth}, parked {st.parked}, server-only "
                    f"{sorted(server - local)[:3]}, local-only {sorted(local - server)[:3]}")
        return ""

    deadline = time.monotonic() + timeout
    last = state()
    while last and time.monotonic() < deadline:
        e.sync_now()
        time.sleep(0.2)
        last = state()
    assert not last, f"not converged after {timeout:.0f} s: {last}; status {e.status}"


def connected(e: Engine, realtime: bool = True) -> None:
    wait_for(lambda: e.status.state == "connected" and (e.status.realtime or not realtime),
             WAIT, what=f"engine connected (status {e.status})")


def push_times(proxy: FaultProxy, n: int, timeout: float) -> list[float]:
    wait_for(lambda: len(proxy.request_times(PUSH)) >= n, timeout,
             what=f"{n} push attempts")
    return proxy.request_times(PUSH)[:n]


# ------------------------------------------------------------------ connection faults


def test_connection_resets_are_retried_on_the_backoff_schedule(
        backend: DevServer, proxy: FaultProxy, tmp_path: Path) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url, realtime=False)
    try:
        e.start()
        connected(e, realtime=False)
        proxy.mode = "reset"
        proxy.clear_events()
        insert_local(tmp_path, [f"rst{i}" for i in range(20)])
        insert_server(info, ["srv-during-reset"])
        times = wait_for(lambda: len(proxy.connect_times()) >= 5 and proxy.connect_times(),
                         WAIT, what="5 connection attempts under reset")
        wait_for(lambda: e.status.state == "disconnected", WAIT, what="disconnected")
        # every attempt is a new connection (the old one was reset): 0.1, 0.2, 0.4, 0.8 s
        print("reset: reconnect gaps", [round(x, 3) for x in gaps(times[:5])])
        assert_backoff(times[:5], backoff_schedule(4, base=BASE, cap=8 * BASE), slack=SLACK)
        proxy.mode = "pass"
        assert_converged(e, tmp_path, info)
        assert pg(info, "SELECT count(*) FROM tasks WHERE id LIKE 'rst%'") == [(20,)]
        assert proxy.stats().resets >= 5
    finally:
        e.close()


def test_delay_slows_but_converges(backend: DevServer, proxy: FaultProxy,
                                   tmp_path: Path) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url)
    try:
        e.start()
        connected(e)
        proxy.set_mode("delay", delay_ms=150)
        t0 = time.monotonic()
        insert_local(tmp_path, [f"dly{i}" for i in range(30)])
        insert_server(info, [f"srv-dly{i}" for i in range(5)])
        assert_converged(e, tmp_path, info)
        assert time.monotonic() - t0 >= 0.3           # a push round trip is >= 2 x 150 ms
        assert e.status.state in ("connected", "syncing") and not e.status.offline
    finally:
        e.close()


def test_blackhole_times_out_and_recovers(backend: DevServer, proxy: FaultProxy,
                                          tmp_path: Path) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url, timeout=1.0)
    try:
        e.start()
        connected(e)
        proxy.mode = "blackhole"
        t0 = time.monotonic()
        insert_local(tmp_path, [f"bh{i}" for i in range(10)])
        insert_server(info, ["srv-bh"])
        wait_for(lambda: e.status.state == "disconnected", timeout=10,
                 what="the push times out (1 s client timeout)")
        elapsed = time.monotonic() - t0
        print(f"blackhole: disconnected after {elapsed:.2f} s")
        assert 0.9 <= elapsed < 5, f"noticed the blackhole after {elapsed:.2f} s"
        assert "timed out" in e.status.last_error, e.status.last_error
        dropped = proxy.stats().dropped
        assert dropped > 0
        # a retry also goes into the blackhole (and times out) before the network heals
        proxy.wait_until(lambda s: s.dropped > dropped, timeout=10)
        proxy.mode = "pass"
        assert_converged(e, tmp_path, info)
        wait_for(lambda: e.status.realtime, timeout=15, what="realtime back after blackhole")
    finally:
        e.close()


def test_websocket_cut_mid_frame_reconnects_and_loses_nothing(
        backend: DevServer, proxy: FaultProxy, tmp_path: Path) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url)
    try:
        e.start()
        connected(e)
        upgrades = len(proxy.events("upgrade"))
        armed = proxy.cut_websocket_mid_frame()
        assert armed == 1
        insert_server(info, [f"ws{i}" for i in range(10)])      # the first frame is cut
        proxy.wait_until(lambda s: s.ws_cuts >= 1, timeout=10)
        wait_for(lambda: len(proxy.events("upgrade")) > upgrades, timeout=15,
                 what="a new websocket after the cut")
        insert_server(info, [f"ws-after{i}" for i in range(3)])
        assert_converged(e, tmp_path, info)
        wait_for(lambda: e.status.realtime, timeout=15, what="realtime live again")
        conn = app(tmp_path)
        try:
            got = {r[0] for r in conn.execute("SELECT id FROM tasks WHERE id LIKE 'ws%'")}
        finally:
            conn.close()
        assert got == {f"ws{i}" for i in range(10)} | {f"ws-after{i}" for i in range(3)}
    finally:
        e.close()


# ------------------------------------------------------------------ backend answers


def test_500_503_429_follow_backoff_and_honour_retry_after(
        backend: DevServer, proxy: FaultProxy, faults: BackendFaults, tmp_path: Path) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url)
    try:
        e.start()
        connected(e)
        proxy.clear_events()
        path = "/rest/v1/rpc/tablesync_apply_tasks"
        faults.fail(500, count=2, path_prefix=path)
        faults.fail(503, count=1, retry_after=0.8, path_prefix=path)
        faults.fail(429, count=1, retry_after=1.2, path_prefix=path)
        insert_local(tmp_path, [f"http{i}" for i in range(15)])
        times = push_times(proxy, 5, timeout=20)
        g = gaps(times)
        print("500/500/503/429: push retry gaps", [round(x, 3) for x in g])
        # 500, 500: backoff 0.1, 0.2 s; 503 (Retry-After 0.8): backoff 0.4 raised to 0.8;
        # 429 (Retry-After 1.2): backoff 0.8 raised to 1.2
        expect = (windows([BASE], slack=SLACK) + windows([2 * BASE], slack=SLACK)
                  + windows([4 * BASE], slack=SLACK, retry_after=0.8)
                  + windows([8 * BASE], slack=SLACK, retry_after=1.2))
        bad = [f"gap {i + 1}: {x:.3f} not in [{w.low:.3f}, {w.high:.3f}]"
               for i, (x, w) in enumerate(zip(g, expect)) if not w.holds(x)]
        assert not bad, "; ".join(bad)
        assert_converged(e, tmp_path, info)
        assert pg(info, "SELECT count(*) FROM tasks WHERE id LIKE 'http%'") == [(15,)]
        assert not e.status.offline
    finally:
        e.close()


def test_queue_never_stalls_offline_after_five_tries_then_recovers(
        backend: DevServer, proxy: FaultProxy, faults: BackendFaults, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url)
    caplog.set_level(logging.INFO, logger="tablesync.engine")
    try:
        e.start()
        connected(e)
        proxy.clear_events()
        faults.fail(500, count=None, path_prefix="/rest/v1/rpc/tablesync_apply_tasks")
        insert_local(tmp_path, [f"off{i}" for i in range(25)])
        times = push_times(proxy, 7, timeout=20)
        print("offline: push retry gaps", [round(x, 3) for x in gaps(times)])
        # 5 tries on the backoff schedule, then offline mode: one try per 1.5 s
        assert_backoff(times, [BASE, 2 * BASE, 4 * BASE, 8 * BASE, OFFLINE, OFFLINE],
                       slack=SLACK)
        wait_for(lambda: e.status.offline and e.status.state == "disconnected",
                 WAIT, what=f"offline and disconnected between tries ({e.status})")
        assert any("offline mode" in r.getMessage() for r in caplog.records)
        insert_server(info, ["srv-while-offline"])
        faults.clear()
        t_clear = time.monotonic()
        wait_for(lambda: not e.status.offline, timeout=OFFLINE + 3,
                 what="recovered at the next offline retry")
        recovered = time.monotonic() - t_clear
        print(f"offline: recovered {recovered:.2f} s after the fault cleared")
        assert recovered <= OFFLINE + SLACK + 0.5
        assert_converged(e, tmp_path, info)
        assert pg(info, "SELECT count(*) FROM tasks WHERE id LIKE 'off%'") == [(25,)]
        # (assert_converged keeps asking for syncs; let the engine settle between cycles)
        wait_for(lambda: e.status.state == "connected", what="connected between cycles")
        # what is logged: every state change with its reason, offline mode as a warning
        msgs = [(r.levelname, r.getMessage()) for r in caplog.records]
        i_down = msgs.index(("INFO", "engine: disconnected (server unreachable)"))
        i_off = next(i for i, m in enumerate(msgs) if m[0] == "WARNING"
                     and m[1].startswith("engine: offline mode, next try in"))
        assert i_down < i_off < msgs.index(("INFO", "engine: connected"), i_off), msgs
    finally:
        e.close()


@pytest.mark.slow
def test_default_backoff_schedule_measured(backend: DevServer, proxy: FaultProxy,
                                           faults: BackendFaults, tmp_path: Path) -> None:
    """The shipped policy (no scaling): retries 1, 2, 4, 8 s apart with jitter 0.25."""
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url, realtime=False, backoff=Backoff())
    try:
        e.start()
        connected(e, realtime=False)
        proxy.clear_events()
        faults.fail(500, count=4, path_prefix="/rest/v1/rpc/tablesync_apply_tasks")
        insert_local(tmp_path, ["default-schedule"])
        times = push_times(proxy, 5, timeout=25)
        print("default policy: push retry gaps", [round(x, 3) for x in gaps(times)])
        assert_backoff(times, backoff_schedule(4), jitter=0.25, slack=SLACK)
        assert_converged(e, tmp_path, info)
    finally:
        e.close()


def test_lost_acknowledgement_is_resent_and_applied_once(
        backend: DevServer, proxy: FaultProxy, tmp_path: Path) -> None:
    """At-least-once push + idempotent apply: the server commits, the answer is lost."""
    from .crash import AUDIT_SQL

    info = backend.info
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        conn.execute(AUDIT_SQL.encode())
    e = make_engine(tmp_path, info, proxy.url, realtime=False)
    try:
        e.start()
        connected(e, realtime=False)
        proxy.clear_events()
        backend.faults.add("rest", 503, count=2, retry_after=0.1, after=True,
                           path_prefix="/rest/v1/rpc/tablesync_apply_tasks")
        insert_local(tmp_path, [f"ack{i}" for i in range(12)])
        assert_converged(e, tmp_path, info)
        assert len(proxy.request_times(PUSH)) >= 3       # two lost answers, then a duplicate
        stored = pg(info, "SELECT id, count(*) FROM crash_audit WHERE id LIKE 'ack%' "
                    "GROUP BY id ORDER BY id")
        assert stored == [(f"ack{i}", 1) for i in sorted(range(12), key=str)], stored
    finally:
        e.close()


def test_failed_catch_up_pages_are_retried_and_lose_nothing(
        backend: DevServer, proxy: FaultProxy, faults: BackendFaults, tmp_path: Path) -> None:
    """Pull side: pages of a catch-up answered 500/503 are retried; the cursor only moves
    once a table was read completely, so no row is skipped."""
    info = backend.info
    e = make_engine(tmp_path, info, proxy.url, realtime=False)
    try:
        e.start()
        connected(e, realtime=False)
        pg(info, "INSERT INTO tasks (id, system_id, title) SELECT 'p' || g, %s, 'bulk' "
           "FROM generate_series(1, 2500) g", SYSTEM)
        proxy.clear_events()
        faults.fail(500, count=2, path_prefix="/rest/v1/tasks")
        faults.fail(503, count=1, retry_after=0.3, path_prefix="/rest/v1/tasks")
        assert_converged(e, tmp_path, info)
        pages = proxy.request_times("GET /rest/v1/tasks?")
        assert len(pages) >= 3 + 3, f"{len(pages)} page requests"   # 3 failed + 3 pages
        conn = app(tmp_path)
        try:
            assert conn.execute("SELECT count(*) FROM tasks WHERE id LIKE 'p%'"
                                ).fetchone() == (2500,)
        finally:
            conn.close()
    finally:
        e.close()
