"""Fixtures: real echo/HTTP/WebSocket servers (module scope) and a proxy in front of each."""

from __future__ import annotations

from typing import Iterator

import pytest

from .proxy import FaultProxy
from .servers import EchoServer, HttpServer, WsServer


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ws_server() -> Iterator[WsServer]:
    server = WsServer()
    yield server
    server.stop()


def _proxy(port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", port, op_timeout=5.0)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def echo_proxy(echo_server: EchoServer) -> Iterator[FaultProxy]:
    yield from _proxy(echo_server.port)


@pytest.fixture
def http_proxy(http_server: HttpServer) -> Iterator[FaultProxy]:
    yield from _proxy(http_server.port)


@pytest.fixture
def ws_proxy(ws_server: WsServer) -> Iterator[FaultProxy]:
    yield from _proxy(ws_server.port)
