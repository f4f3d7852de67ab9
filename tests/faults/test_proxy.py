"""The fault proxy against real sockets: echo, HTTP (httpx) and WebSocket servers."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from .proxy import FaultProxy, Mode
from .servers import EchoServer, HttpServer, WsServer

TIMEOUT = 2.0


def _dial(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    return sock


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):          # bounded by the socket timeout
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def sock(echo_proxy: FaultProxy) -> Iterator[socket.socket]:
    with _dial(echo_proxy) as s:
        yield s


# -- construction and lifecycle -------------------------------------------------------
@pytest.mark.parametrize("host", ["10.1.2.3", "0.0.0.0", "192.168.0.1", "example.invalid", ""])
def test_non_loopback_targets_and_listen_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(host, 80)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("127.0.0.1", 80, host=host)


def test_loopback_spellings_are_accepted() -> None:
    assert FaultProxy("localhost", 1).target == ("127.0.0.1", 1)
    assert FaultProxy("::1", 1).target == ("::1", 1)
    assert FaultProxy("127.0.0.2", 1).target == ("127.0.0.2", 1)


def test_unknown_mode_and_negative_delay_are_refused(echo_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        echo_proxy.mode = "drop"
    with pytest.raises(ValueError, match="delay_ms"):
        echo_proxy.set_mode("delay", delay_ms=-1)
    assert echo_proxy.mode == Mode("pass")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_fds(target: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while _fds() > target and time.monotonic() < deadline:
        time.sleep(0.01)
    return _fds()


def _wait_threads(target: set[threading.Thread]) -> set[threading.Thread]:
    """The live threads once the echo server's per-connection handlers have finished."""
    deadline = time.monotonic() + TIMEOUT
    while set(threading.enumerate()) != target and time.monotonic() < deadline:
        time.sleep(0.01)
    return set(threading.enumerate())


def test_start_stop_leaves_no_thread_socket_or_port(echo_server: EchoServer) -> None:
    before_fds, before_threads = _fds(), set(threading.enumerate())
    proxy = FaultProxy("127.0.0.1", echo_server.port)
    port = proxy.start()
    with pytest.raises(RuntimeError, match="already running"):
        proxy.start()
    socks = [_dial(proxy) for _ in range(3)]
    assert [_echo(s, b"x%d" % i) for i, s in enumerate(socks)] == [b"x0", b"x1", b"x2"]
    proxy.stop()
    proxy.stop()                                   # idempotent
    for s in socks:
        assert s.recv(10) == b""                   # the proxy closed them
        s.close()
    assert _wait_threads(before_threads) == before_threads
    assert _wait_fds(before_fds) == before_fds     # incl. the echo server's side
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    with pytest.raises(RuntimeError, match="not running"):
        proxy.set_mode("reset")


# -- pass, counters, close_all --------------------------------------------------------------
def test_pass_forwards_and_counts(echo_proxy: FaultProxy, sock: socket.socket) -> None:
    payload = os.urandom(300_000)
    assert _echo(sock, payload) == payload
    stats = echo_proxy.wait_until(lambda s: s.bytes_down == len(payload))  # counted after drain
    assert (stats.connections, stats.open, stats.bytes_up) == (1, 1, len(payload))
    assert [e.kind for e in echo_proxy.events()] == ["connect"]


def test_close_all_ends_live_connections(echo_proxy: FaultProxy) -> None:
    with _dial(echo_proxy) as a, _dial(echo_proxy) as b:
        assert _echo(a, b"a") == b"a" and _echo(b, b"b") == b"b"
        assert echo_proxy.close_all() == 2
        assert a.recv(1) == b""                    # FIN
        echo_proxy.wait_until(lambda s: s.open == 0)
    with _dial(echo_proxy) as c:
        assert _echo(c, b"c") == b"c"
        assert echo_proxy.close_all(rst=True) == 1
        with pytest.raises(ConnectionResetError):
            c.recv(1)


def test_client_half_close_is_passed_on(echo_proxy: FaultProxy, sock: socket.socket) -> None:
    sock.sendall(b"last words")
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(64) == b"last words"
    assert sock.recv(1) == b""                     # the echo server closed after EOF


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        with pytest.raises(ConnectionResetError), _dial(proxy) as s:
            s.sendall(b"x")
            s.recv(1)
        assert proxy.stats().upstream_errors == 1


# -- reset ----------------------------------------------------------------------------
def test_reset_kills_live_and_new_connections(echo_proxy: FaultProxy, sock: socket.socket) -> None:
    assert _echo(sock, b"hi") == b"hi"
    echo_proxy.mode = "reset"
    with pytest.raises(ConnectionResetError):
        sock.recv(1)
    with pytest.raises(ConnectionResetError), _dial(echo_proxy) as fresh:
        fresh.sendall(b"x")                        # the RST may come at connect or here
        fresh.recv(1)
    assert echo_proxy.stats().resets == 2
    echo_proxy.mode = "pass"
    with _dial(echo_proxy) as again:
        assert _echo(again, b"ok") == b"ok"


def test_reset_gives_httpx_a_transport_error(http_proxy: FaultProxy) -> None:
    with httpx.Client(base_url=http_proxy.url, timeout=TIMEOUT) as client:
        assert client.get("/ping").text == "pong"
        http_proxy.mode = "reset"
        with pytest.raises((httpx.ConnectError, httpx.ReadError)):
            client.get("/ping")
        http_proxy.mode = "pass"
        assert client.get("/ping").text == "pong"


# -- delay ------------------------------------------------------------------------------
def test_delay_applies_per_chunk_in_both_directions(echo_proxy: FaultProxy,
                                                    sock: socket.socket) -> None:
    echo_proxy.set_mode("delay", delay_ms=100)
    start = time.monotonic()
    assert _echo(sock, b"slow") == b"slow"
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1.0, elapsed           # 100 ms up + 100 ms down
    echo_proxy.mode = "pass"
    start = time.monotonic()
    assert _echo(sock, b"fast") == b"fast"
    assert time.monotonic() - start < 0.1


def test_delay_is_measured_by_an_http_client(http_proxy: FaultProxy) -> None:
    with httpx.Client(base_url=http_proxy.url, timeout=TIMEOUT) as client:
        assert client.get("/ping").status_code == 200          # connection is warm
        http_proxy.set_mode("delay", delay_ms=150)
        resp = client.get("/ping")
        assert resp.text == "pong"
        assert 0.3 <= resp.elapsed.total_seconds() < 1.5, resp.elapsed


# -- blackhole -----------------------------------------------------------------------------
def test_blackhole_reads_but_never_answers(echo_proxy: FaultProxy, sock: socket.socket) -> None:
    assert _echo(sock, b"before") == b"before"
    echo_proxy.mode = "blackhole"
    sock.settimeout(0.2)
    with _dial(echo_proxy) as idle:                # accepted, nothing sent
        sock.sendall(b"lost")
        with pytest.raises(socket.timeout):
            sock.recv(1)
        echo_proxy.wait_until(lambda s: s.dropped == 4)
        echo_proxy.mode = "pass"
        sock.settimeout(TIMEOUT)
        with pytest.raises(ConnectionResetError):  # its stream lost bytes: reset on heal
            sock.recv(1)
        assert _echo(idle, b"idle survives") == b"idle survives"


def test_blackhole_times_out_an_http_client(http_proxy: FaultProxy) -> None:
    http_proxy.mode = "blackhole"
    with httpx.Client(base_url=http_proxy.url, timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get("/ping")
        assert 0.3 <= time.monotonic() - start < 1.0
    assert http_proxy.stats().bytes_up == 0 and http_proxy.stats().dropped > 0
    assert [e.detail for e in http_proxy.events("request")] == ["GET /ping HTTP/1.1"]


# -- refuse ------------------------------------------------------------------------------
def test_refuse_stops_listening_and_comes_back_on_the_same_port(
        echo_proxy: FaultProxy, sock: socket.socket) -> None:
    port = echo_proxy.port
    assert _echo(sock, b"live") == b"live"          # accepted by the proxy, not just the kernel
    echo_proxy.mode = "refuse"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    assert _echo(sock, b"live one stays") == b"live one stays"
    echo_proxy.mode = "pass"
    assert echo_proxy.port == port
    with _dial(echo_proxy) as s:
        assert _echo(s, b"back") == b"back"


def test_refuse_gives_httpx_a_connect_error(http_proxy: FaultProxy) -> None:
    http_proxy.mode = "refuse"
    with httpx.Client(base_url=http_proxy.url, timeout=TIMEOUT) as client:
        with pytest.raises(httpx.ConnectError):
            client.get("/ping")
        http_proxy.mode = "pass"
        assert client.get("/ping").text == "pong"


# -- request log ---------------------------------------------------------------------------
def test_request_lines_are_logged_per_keepalive_request(http_proxy: FaultProxy) -> None:
    with httpx.Client(base_url=http_proxy.url, timeout=TIMEOUT) as client:
        assert client.post("/echo", content=b"GET /not-a-request HTTP/1.1\r\n\r\n").status_code == 200
        assert client.get("/ping").text == "pong"
        assert client.get("/fail").status_code == 503
    requests = http_proxy.events("request")
    assert [e.detail for e in requests] == ["POST /echo HTTP/1.1", "GET /ping HTTP/1.1",
                                            "GET /fail HTTP/1.1"]
    assert len({e.conn for e in requests}) == 1
    assert len(http_proxy.request_times("/fail")) == 1
    assert all(e.at.tzinfo is not None for e in requests)


def test_modes_can_be_switched_from_many_threads(echo_proxy: FaultProxy,
                                                 sock: socket.socket) -> None:
    errors: list[BaseException] = []

    def flip(n: int) -> None:
        try:
            for i in range(20):
                echo_proxy.set_mode("delay" if (i + n) % 2 else "pass", delay_ms=1)
        except BaseException as exc:               # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        assert _echo(sock, b"ping") == b"ping"
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert len(echo_proxy.events("mode")) == 80


# -- websocket ------------------------------------------------------------------------------
@pytest.fixture
def ws(ws_proxy: FaultProxy) -> Iterator[ClientConnection]:
    client = connect(f"ws://127.0.0.1:{ws_proxy.port}", open_timeout=TIMEOUT,
                     compression=None, ping_interval=None, close_timeout=0.5)
    with client:
        yield client


def test_websocket_passes_through(ws_proxy: FaultProxy, ws: ClientConnection) -> None:
    ws.send("hello")
    assert ws.recv(timeout=TIMEOUT) == "hello"
    assert [e.kind for e in ws_proxy.events()][:3] == ["connect", "request", "upgrade"]


@pytest.mark.parametrize("size,forwarded", [(100_000, 10 + 50_000), (5, 2 + 2), (0, 1)])
def test_cut_mid_frame_gives_the_client_an_error_not_a_hang(
        ws_proxy: FaultProxy, ws: ClientConnection, size: int, forwarded: int) -> None:
    ws.send("warm-up")
    assert ws.recv(timeout=TIMEOUT) == "warm-up"
    assert ws_proxy.cut_websocket_mid_frame() == 1
    before = ws_proxy.stats().bytes_down
    ws.send(f"size:{size}")
    start = time.monotonic()
    with pytest.raises(ConnectionClosedError):
        ws.recv(timeout=TIMEOUT)
    assert time.monotonic() - start < 1.0
    stats = ws_proxy.stats()
    assert stats.ws_cuts == 1
    assert stats.bytes_down - before == forwarded  # header + half the payload, then EOF
    ws_proxy.wait_until(lambda s: s.open == 0)


def test_cut_arms_only_websocket_connections(ws_proxy: FaultProxy) -> None:
    assert ws_proxy.cut_websocket_mid_frame() == 0
    with socket.create_connection(("127.0.0.1", ws_proxy.port), timeout=TIMEOUT) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.recv(12).startswith(b"HTTP/1.1")
        assert ws_proxy.cut_websocket_mid_frame() == 0


def test_cut_only_affects_live_connections(ws_proxy: FaultProxy, ws_server: WsServer) -> None:
    with connect(f"ws://127.0.0.1:{ws_proxy.port}", compression=None) as first:
        first.send("a")
        assert first.recv(timeout=TIMEOUT) == "a"
        assert ws_proxy.cut_websocket_mid_frame() == 1
        with connect(f"ws://127.0.0.1:{ws_proxy.port}", compression=None) as second:
            second.send("size:1000")
            assert len(second.recv(timeout=TIMEOUT)) == 1000   # not armed: opened later
        with pytest.raises(ConnectionClosedError):
            first.send("size:1000")
            first.recv(timeout=TIMEOUT)
