"""Fixtures: a running devserver on a fresh bootstrapped database, an RLS table."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo

from .helpers import ITEMS_SQL, run_sql


@pytest.fixture
def server(pg_dsn: str) -> Iterator[DevServer]:
    srv = DevServer(dsn=pg_dsn, auto_realtime=False, enable_faults=True)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def info(server: DevServer) -> DevServerInfo:
    return server.info


@pytest.fixture
def items(info: DevServerInfo) -> str:
    """Create the RLS-protected ``items`` table (+ functions); returns the DSN."""
    run_sql(info.dsn, ITEMS_SQL)
    return info.dsn


@pytest.fixture
def http(info: DevServerInfo) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=info.url, timeout=10) as client:
        yield client


