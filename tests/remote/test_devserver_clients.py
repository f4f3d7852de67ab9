"""RestRemote, Session and RealtimeClient against the real devserver on real PostgreSQL,
with the example project's generated supabase.sql (apply/watermark functions, RLS)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from tablesync.clock import ManualClock, TimeSource
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.errors import AuthError
from tablesync.project import Project, load_project
from tablesync.remote.base import ChangeEvent, DeadSessionError, TableChannel
from tablesync.remote.realtime import RealtimeClient
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.sql import postgres
from tablesync.vault import Secret, Vault

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(ROOT / "sync.toml")


def _start(pg_dsn: str, project: Project, **kw: Any) -> DevServer:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
    srv = DevServer(dsn=pg_dsn, **kw)
    srv.start()
    return srv


@pytest.fixture
def server(pg_dsn: str, project: Project) -> Iterator[DevServerInfo]:
    srv = _start(pg_dsn, project)
    yield srv.info
    srv.stop()


def _remote(info: DevServerInfo, project: Project) -> RestRemote:
    return RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables},
                      timeout=10)


def _provision(info: DevServerInfo, project: Project, system: str) -> str:
    email = f"{system}@example.com"
    with _remote(info, project) as r:
        user = r.admin_create_user(Secret(info.service_key), email, Secret("pw-" + system),
                                   {"system_id": system})
    assert user["app_metadata"]["system_id"] == system
    return email


def _session(info: DevServerInfo, project: Project, remote: RestRemote, tmp: Path,
             system: str, clock: TimeSource = time.time) -> Session:
    email = _provision(info, project, system)
    s = Session(remote, Vault(tmp / f"{system}.json"), project=info.url, email=email,
                password=Secret("pw-" + system), clock=clock)
    remote.tokens = s
    s.ensure()
    return s


def _task(i: str, hlc: int, system: str = "system-a", origin: str = "system-a",
          **over: Any) -> dict[str, Any]:
    row = {"id": i, "system_id": system, "project_id": None, "title": f"t{hlc}",
           "status": "pending", "priority": 1, "payload": None, "updated_at": None,
           "_ts_hlc": hlc, "_ts_origin": origin, "_ts_deleted": False, "_ts_base_hlc": 0,
           "_ts_base_origin": ""}
    row.update(over)
    return row


def test_push_outcomes_watermark_and_pull(server: DevServerInfo, project: Project,
                                          tmp_path: Path) -> None:
    with _remote(server, project) as a, _remote(server, project) as b:
        _session(server, project, a, tmp_path, "system-a")
        _session(server, project, b, tmp_path, "system-b")
        hlc = int(time.time() * 1000) << 16
        out = a.apply("tasks", [_task("t1", hlc), _task("t2", hlc)])
        assert [o.outcome for o in out] == ["applied", "applied"]
        out = a.apply("tasks", [_task("t1", hlc), _task("t2", hlc - 5),
                                _task("t3", hlc, system="system-b")])
        assert [o.outcome for o in out] == ["duplicate", "superseded", "forbidden"]
        assert out[1].row is not None and out[1].row["_ts_hlc"] == hlc
        assert out[2].message
        mark = a.watermark()
        assert mark > 0
        page = a.pull_page("tasks", "system_id", "system-a", cursor=0, after_seq=0)
        assert sorted(r["id"] for r in page.rows) == ["t1", "t2"] and not page.rejected
        assert page.size == 2 and page.last_seq == max(r["_ts_seq"] for r in page.rows)
        assert all(r["_ts_xid"] < mark for r in page.rows)
        more = a.pull_page("tasks", "system_id", "system-a", cursor=0,
                           after_seq=page.last_seq)
        assert more.rows == [] and more.size == 0
        # B sees none of A's rows, even when asking for system-a (RLS)
        assert b.pull_page("tasks", "system_id", "system-a", cursor=0, after_seq=0).rows == []


def test_paging_never_exceeds_limit(server: DevServerInfo, project: Project,
                                    tmp_path: Path) -> None:
    with _remote(server, project) as a:
        _session(server, project, a, tmp_path, "system-a")
        hlc = int(time.time() * 1000) << 16
        a.apply("tasks", [_task(f"p{i:03d}", hlc + i) for i in range(25)])
        seen: list[str] = []
        after, pages = 0, 0
        while True:
            page = a.pull_page("tasks", "system_id", "system-a", cursor=0, after_seq=after,
                               limit=10)
            pages += 1
            seen += [r["id"] for r in page.rows]
            if page.size < 10:
                break
            assert page.last_seq is not None
            after = page.last_seq
        assert pages == 3 and seen == [f"p{i:03d}" for i in range(25)]


def test_wrong_password_and_dead_refresh(server: DevServerInfo, project: Project) -> None:
    email = _provision(server, project, "system-c")
    with _remote(server, project) as r:
        with pytest.raises(AuthError) as info:
            r.sign_in(email, Secret("wrong"))
        assert not isinstance(info.value, DeadSessionError)
        with pytest.raises(DeadSessionError):
            r.refresh(Secret("not-a-refresh-token-at-all"))
        tokens = r.sign_in(email, Secret("pw-system-c"))
        assert tokens.user_id and tokens.expires_in() > 60
        again = r.refresh(tokens.refresh_token)
        assert again.refresh_token != tokens.refresh_token


def test_expired_token_refreshes_and_retries(pg_dsn: str, project: Project,
                                             tmp_path: Path) -> None:
    clock = ManualClock()                     # shared: the devserver's and the session's time
    srv = _start(pg_dsn, project, jwt_exp=3, clock=clock)
    try:
        info = srv.info
        with _remote(info, project) as a:
            s = _session(info, project, a, tmp_path, "system-a", clock)
            before = s.access_token()
            clock.advance(3.5)                # the access token is expired now
            hlc = int(time.time() * 1000) << 16
            out = a.apply("tasks", [_task("x1", hlc)])
            assert out[0].outcome == "applied"
            assert s.access_token() != before
            stored = Vault(tmp_path / "system-a.json").load()
            assert stored is not None and stored.access_token == s.access_token()
    finally:
        srv.stop()


def test_realtime_delivers_own_scope_only(server: DevServerInfo, project: Project,
                                          tmp_path: Path) -> None:
    with _remote(server, project) as a:
        s = _session(server, project, a, tmp_path, "system-a")

        async def body() -> None:
            changes: asyncio.Queue[ChangeEvent] = asyncio.Queue()
            status: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
            client = RealtimeClient(
                server.url, server.anon_key,
                [TableChannel(t, "system_id", "system-a") for t in ("projects", "tasks")],
                on_change=changes.put, on_status=lambda t, ok: status.put_nowait((t, ok)),
                access_token=s.access_token(), heartbeat=1.0)
            task = asyncio.ensure_future(client.run())
            live = {await asyncio.wait_for(status.get(), 10) for _ in range(2)}
            assert live == {("projects", True), ("tasks", True)}
            hlc = int(time.time() * 1000) << 16
            loop = asyncio.get_running_loop()
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                await loop.run_in_executor(None, lambda: conn.execute(
                    "INSERT INTO public.tasks (id, system_id, title) VALUES "
                    "('rb', 'system-b', 'not mine'), ('ra', 'system-a', 'mine')"))
            t0 = time.monotonic()
            got = await asyncio.wait_for(changes.get(), 5)
            assert time.monotonic() - t0 < 1.0
            assert (got.table, got.type, got.record["id"]) == ("tasks", "INSERT", "ra")
            assert got.record["_ts_origin"] == "server" and got.record["_ts_seq"]
            out = await loop.run_in_executor(None, lambda: a.apply(
                "tasks", [_task("ra", max(hlc, got.record["_ts_hlc"]) + 1, title="edited")]))
            assert out[0].outcome == "applied"
            upd = await asyncio.wait_for(changes.get(), 5)
            assert (upd.type, upd.record["title"]) == ("UPDATE", "edited")
            client.set_token(s.refresh().access_token)
            await asyncio.sleep(0.3)
            assert client.stats.token_pushes >= 2
            assert changes.empty() and client.stats.malformed == 0
            client.stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(asyncio.wait_for(body(), 40))
