"""The devserver's fault hooks, driven over HTTP against a running devserver.

The backend answers 500, 503 and 429 (with Retry-After) on command and recovers when told;
behind the fault proxy, a client honouring Retry-After is measured from the request log.
"""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import psycopg
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo

from .backend import BackendFaults
from .proxy import FaultProxy
from .schedule import assert_backoff, backoff_schedule

pytestmark = pytest.mark.postgres

SETUP_SQL = b"""
CREATE TABLE public.notes (id integer PRIMARY KEY, body text);
INSERT INTO public.notes VALUES (1, 'one');
CREATE FUNCTION public.add(a integer, b integer) RETURNS integer
  LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
"""


@pytest.fixture(scope="module")
def backend(pg_server: object) -> Iterator[tuple[DevServer, DevServerInfo]]:
    """One devserver with faults enabled on its own database, for the whole module."""
    dsn = pg_server.create_database("faults_backend", template="tablesync_template")  # type: ignore[attr-defined]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
    server = DevServer(dsn=dsn, auto_realtime=False, enable_faults=True)
    info = server.start()
    yield server, info
    server.stop()
    pg_server.drop_database("faults_backend")  # type: ignore[attr-defined]


@pytest.fixture
def info(backend: tuple[DevServer, DevServerInfo]) -> Iterator[DevServerInfo]:
    server, info = backend
    yield info
    server.faults.clear()


@pytest.fixture
def faults(info: DevServerInfo) -> Iterator[BackendFaults]:
    with BackendFaults(info.url, info.service_key) as f:
        yield f


@pytest.fixture
def client(info: DevServerInfo) -> Iterator[httpx.Client]:
    headers = {"apikey": info.anon_key, "Authorization": f"Bearer {info.anon_key}"}
    with httpx.Client(base_url=info.url, headers=headers, timeout=5) as c:
        yield c


def _notes(client: httpx.Client) -> httpx.Response:
    return client.get("/rest/v1/notes?select=*")


def test_500_until_told_to_recover(faults: BackendFaults, client: httpx.Client) -> None:
    assert _notes(client).json() == [{"id": 1, "body": "one"}]
    faults.fail(500, count=None)
    for _ in range(3):
        resp = _notes(client)
        assert resp.status_code == 500 and "retry-after" not in resp.headers
    faults.clear()
    assert _notes(client).json() == [{"id": 1, "body": "one"}]


def test_503_with_retry_after_for_a_counted_number_of_requests(
        faults: BackendFaults, client: httpx.Client) -> None:
    faults.fail(503, count=2, retry_after=3)
    answers = [_notes(client) for _ in range(3)]
    assert [r.status_code for r in answers] == [503, 503, 200]
    assert [r.headers.get("retry-after") for r in answers[:2]] == ["3", "3"]
    assert answers[0].json()["code"] == "PGRST001"


def test_503_without_retry_after_still_sends_one(faults: BackendFaults,
                                                 client: httpx.Client) -> None:
    faults.fail(503)
    assert _notes(client).headers["retry-after"] == "1"


def test_429_with_retry_after_on_rpc_calls_only(faults: BackendFaults,
                                                client: httpx.Client) -> None:
    faults.fail(429, retry_after=2, path_prefix="/rest/v1/rpc/")
    assert _notes(client).status_code == 200                 # not an RPC: untouched
    resp = client.post("/rest/v1/rpc/add", json={"a": 1, "b": 2})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    assert client.post("/rest/v1/rpc/add", json={"a": 1, "b": 2}).json() == 3


def test_auth_surface_fails_on_command(faults: BackendFaults, client: httpx.Client) -> None:
    faults.fail(503, surface="auth", retry_after=1)
    resp = client.post("/auth/v1/token?grant_type=password", json={"email": "a@b.c",
                                                                   "password": "x"})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert _notes(client).status_code == 200                 # REST unaffected


def test_hooks_need_the_service_key(info: DevServerInfo) -> None:
    with BackendFaults(info.url, info.anon_key) as anon:
        with pytest.raises(RuntimeError, match="403"):
            anon.fail(500)


def test_retry_after_is_measured_through_the_proxy(info: DevServerInfo, faults: BackendFaults) -> None:
    """A client that waits max(backoff, Retry-After) shows it in the proxy's request log."""
    retry_after = 0.3
    faults.fail(503, count=3, retry_after=retry_after)
    with FaultProxy("127.0.0.1", int(info.url.rsplit(":", 1)[1])) as proxy:
        headers = {"apikey": info.anon_key, "Authorization": f"Bearer {info.anon_key}"}
        with httpx.Client(base_url=proxy.url, headers=headers, timeout=5) as c:
            for attempt in range(1, 10):                     # bounded
                resp = c.get("/rest/v1/notes?select=*")
                if resp.status_code == 200:
                    break
                backoff = backoff_schedule(attempt, base=0.05)[-1]
                time.sleep(max(backoff, float(resp.headers["retry-after"])))
        times = proxy.request_times("GET /rest/v1/notes")
    assert resp.status_code == 200 and len(times) == 4
    assert_backoff(times, backoff_schedule(3, base=0.05), jitter=0.25, slack=0.3,
                   retry_after=retry_after)
