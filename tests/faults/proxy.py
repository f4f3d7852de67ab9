"""A fault-injecting TCP proxy on loopback, driven from the test thread.

``FaultProxy(target_host, target_port)`` listens on 127.0.0.1 (port 0 -> a free port) and
forwards every accepted connection to the target, which must be a loopback address. An
asyncio loop runs in one background thread; every public method is thread-safe and waits
(bounded) until the loop applied it. Modes (``proxy.mode = "delay"`` or ``set_mode``):

* ``pass``      forward both directions unchanged;
* ``reset``     RST (SO_LINGER 0) every live connection now and every new one at accept;
* ``delay``     sleep ``delay_ms`` before forwarding each chunk, both directions;
* ``blackhole`` accept and read, but forward and answer nothing; a connection that lost
                bytes this way is reset when the mode ends (its stream is broken);
* ``refuse``    stop listening (new connects get ECONNREFUSED); live ones are untouched.

``cut_websocket_mid_frame()`` arms every live WebSocket connection (one whose first
response was ``HTTP/1.1 101``): it forwards only part of the next server->client frame,
then closes the connection. ``close_all()`` drops every live connection. ``stats()`` counts
connections and bytes; ``events()`` is the timeline (connects, HTTP request lines, upgrades,
cuts, resets) with monotonic timestamps, from which ``request_times()`` and
``connect_times()`` let a test measure retry gaps (see ``faults.schedule``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import struct
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Coroutine, TypeVar

from .sniff import FrameTracker, RequestSniffer, UpgradeSniffer

T = TypeVar("T")

PASS, RESET, DELAY, BLACKHOLE, REFUSE = "pass", "reset", "delay", "blackhole", "refuse"
KINDS = (PASS, RESET, DELAY, BLACKHOLE, REFUSE)
DEFAULT_CHUNK = 64 * 1024
DEFAULT_TIMEOUT = 5.0
BACKLOG = 128
MAX_EVENTS = 100_000
COUNTERS = ("connections", "bytes_up", "bytes_down", "dropped", "resets", "refused",
            "ws_cuts", "upstream_errors")


def loopback_address(host: str) -> str:
    """``host`` as a loopback IP literal; ValueError for anything else (no DNS lookups)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"fault proxy: {host!r} is not a loopback IP address "
                         "(use 127.0.0.1)") from None
    if not ip.is_loopback:
        raise ValueError(f"fault proxy: {host} is not a loopback address; "
                         "the proxy only forwards on loopback")
    return str(ip)


@dataclass(frozen=True)
class Mode:
    """What the proxy does with traffic; ``delay_ms`` only matters for ``delay``."""

    kind: str = PASS
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault proxy: unknown mode {self.kind!r} (one of {', '.join(KINDS)})")
        if self.delay_ms < 0:
            raise ValueError("fault proxy: delay_ms must be >= 0")


@dataclass(frozen=True)
class Stats:
    """Counters since start (``open`` = live connections right now)."""

    connections: int = 0       # accepted
    open: int = 0
    bytes_up: int = 0          # forwarded client -> server
    bytes_down: int = 0        # forwarded server -> client
    dropped: int = 0           # bytes read and discarded (blackhole)
    resets: int = 0            # connections reset with RST
    refused: int = 0           # waiting in the backlog when refusing began: reset
    ws_cuts: int = 0           # WebSocket connections cut mid-frame
    upstream_errors: int = 0   # the target could not be reached


@dataclass(frozen=True)
class Event:
    """One thing the proxy saw: ``t`` is time.monotonic(), ``at`` the UTC wall time."""

    kind: str                  # connect|request|upgrade|cut|reset|close|upstream_error|mode
    conn: int                  # connection id (0 for mode changes)
    t: float
    at: datetime
    detail: str = ""


@dataclass(eq=False)
class _Conn:
    id: int
    client_r: asyncio.StreamReader
    client_w: asyncio.StreamWriter
    upstream: asyncio.Future[None]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    up_r: asyncio.StreamReader | None = None
    up_w: asyncio.StreamWriter | None = None
    requests: RequestSniffer = field(default_factory=RequestSniffer)
    upgrade: UpgradeSniffer = field(default_factory=UpgradeSniffer)
    frames: FrameTracker | None = None
    cut_from: int | None = None    # frames starting at/after this offset get cut
    cut_at: int | None = None      # absolute offset where the stream is cut
    poisoned: bool = False         # lost bytes to the blackhole
    dropped: bool = False


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with SO_LINGER 0, so the peer gets a RST."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    """Close now (FIN after what the kernel already holds)."""
    if writer is not None:
        writer.transport.abort()


class FaultProxy:
    """A loopback TCP proxy with run-time switchable faults (see the module docstring)."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1",
                 port: int = 0, chunk_size: int = DEFAULT_CHUNK,
                 connect_timeout: float = DEFAULT_TIMEOUT,
                 op_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = (loopback_address(target_host), int(target_port))
        self.host = loopback_address(host)
        self._port = int(port)
        self.chunk_size, self.connect_timeout, self.op_timeout = chunk_size, connect_timeout, op_timeout
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._events: list[Event] = []
        self._mode = Mode()
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._mode_changed: asyncio.Event | None = None

    # -- lifecycle (test thread) ------------------------------------------------
    def start(self) -> int:
        """Start the loop thread and listen; return the port."""
        if self._thread is not None:
            raise RuntimeError("fault proxy is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), daemon=True,
                                        name=f"fault-proxy->{self.target[1]}")
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise
        return self.port

    def stop(self) -> None:
        """Close the listener and every connection, end all tasks and the thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            if thread.is_alive():
                self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.op_timeout)
            self._thread = self._loop = None
        if thread.is_alive():
            raise RuntimeError("fault proxy thread did not stop")

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the address clients should use)."""
        return f"http://{self.host}:{self._port}"

    # -- control (test thread) ----------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, value: Mode | str) -> None:
        self.set_mode(value.kind if isinstance(value, Mode) else value,
                      delay_ms=value.delay_ms if isinstance(value, Mode) else 0.0)

    def set_mode(self, kind: str, *, delay_ms: float = 0.0) -> None:
        """Switch mode; returns once live connections were handled (e.g. reset)."""
        self._call(self._apply_mode(Mode(kind, delay_ms)))

    def cut_websocket_mid_frame(self) -> int:
        """Arm every live WebSocket connection; return how many were armed."""
        return self._call(self._arm_cut())

    def close_all(self, *, rst: bool = False) -> int:
        """Drop every live connection (FIN, or RST with ``rst``); return how many."""
        return self._call(self._close_all(rst))

    def stats(self) -> Stats:
        with self._lock:
            return Stats(open=len(self._conns), **self._counters)

    def events(self, kind: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if kind is None or e.kind == kind]

    def clear_events(self) -> None:
        with self._lock:
            self._events.clear()

    def request_times(self, contains: str = "") -> list[float]:
        """Monotonic times of the HTTP request lines seen whose text contains ``contains``."""
        return [e.t for e in self.events("request") if contains in e.detail]

    def connect_times(self) -> list[float]:
        """Monotonic times of accepted connections."""
        return [e.t for e in self.events("connect")]

    def wait_until(self, predicate: Callable[[Stats], bool], timeout: float = DEFAULT_TIMEOUT) -> Stats:
        """Poll ``stats()`` until ``predicate`` holds; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fault proxy: condition not met within {timeout} s: {stats}")
            time.sleep(0.005)

    # -- plumbing -----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise RuntimeError("fault proxy is not running")
        if threading.current_thread() is thread:
            coro.close()
            raise RuntimeError("fault proxy methods must not be called from its own loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(self.op_timeout)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _event(self, kind: str, conn: int, detail: str = "") -> None:
        event = Event(kind, conn, time.monotonic(), datetime.now(timezone.utc), detail)
        with self._lock:
            if len(self._events) < MAX_EVENTS:
                self._events.append(event)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- loop side: listener and modes --------------------------------------------
    async def _listen(self) -> None:
        """Bind and listen (the same port again after ``refuse``), start accepting."""
        if self._mode_changed is None:
            self._mode_changed = asyncio.Event()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self._port = int(sock.getsockname()[1])
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_acceptable, sock)

    def _on_acceptable(self, sock: socket.socket) -> None:
        """Accept what is pending (at most a backlog's worth per wake-up)."""
        for conn in self._accept_pending(sock):
            self._spawn(self._adopt(conn))

    @staticmethod
    def _accept_pending(sock: socket.socket) -> list[socket.socket]:
        conns: list[socket.socket] = []
        for _ in range(BACKLOG):
            try:
                conn, _ = sock.accept()
            except OSError:             # BlockingIOError: nothing more pending
                break
            conn.setblocking(False)
            conns.append(conn)
        return conns

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=self.chunk_size)
        except OSError:
            conn.close()
            return
        await self._handle(reader, writer)

    def _close_listener(self) -> None:
        """Stop listening now: new connects are refused, ones still waiting in the backlog
        are reset; live connections stay."""
        sock, self._listener = self._listener, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        for conn in self._accept_pending(sock):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            self._count("refused")
        sock.close()

    async def _apply_mode(self, mode: Mode) -> None:
        old, self._mode = self._mode, mode
        self._event("mode", 0, f"{mode.kind} {mode.delay_ms:g}ms" if mode.kind == DELAY else mode.kind)
        if mode.kind == REFUSE:
            self._close_listener()
        elif old.kind == REFUSE:
            try:
                await self._listen()
            except OSError as exc:
                self._mode = old
                raise RuntimeError(f"fault proxy: cannot listen on 127.0.0.1:{self._port} "
                                   f"again ({exc.strerror}); still refusing") from None
        if mode.kind == RESET:
            for conn in list(self._conns.values()):
                self._drop(conn, rst=True)
        elif old.kind == BLACKHOLE and mode.kind != BLACKHOLE:
            for conn in [c for c in self._conns.values() if c.poisoned]:
                self._drop(conn, rst=True)
        changed, self._mode_changed = self._mode_changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def _arm_cut(self) -> int:
        armed = 0
        for conn in self._conns.values():
            if conn.frames is not None and not conn.dropped and conn.cut_from is None:
                conn.cut_from = conn.frames.offset
                armed += 1
        return armed

    async def _close_all(self, rst: bool) -> int:
        conns = [c for c in self._conns.values() if not c.dropped]
        for conn in conns:
            self._drop(conn, rst=rst)
        return len(conns)

    async def _shutdown(self) -> None:
        self._close_listener()
        for conn in list(self._conns.values()):
            self._drop(conn, rst=False)
        for attempt in range(2):
            pending = [t for t in self._tasks if not t.done()]
            if not pending:
                break
            if attempt:
                for task in pending:
                    task.cancel()
            await asyncio.wait(pending, timeout=self.op_timeout / 4)
        await asyncio.sleep(0)      # let aborted transports close their sockets

    # -- loop side: one connection -------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(next(self._ids), reader, writer, asyncio.get_running_loop().create_future())
        self._conns[conn.id] = conn
        self._count("connections")
        self._event("connect", conn.id)
        try:
            await self._serve(conn)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._drop(conn, rst=False)
            self._conns.pop(conn.id, None)
            self._event("close", conn.id)

    async def _serve(self, conn: _Conn) -> None:
        kind = self._mode.kind
        if kind in (RESET, REFUSE):
            self._count("refused" if kind == REFUSE else "resets")
            self._event("reset", conn.id, kind)
            _rst(conn.client_w)
            conn.dropped = True
            return
        up = self._spawn(self._pump_up(conn))
        if await self._hold(conn) and await self._connect(conn):
            down = self._spawn(self._pump_down(conn))
            await asyncio.wait({up, down})
        else:
            self._drop(conn, rst=False)
            await asyncio.wait({up})

    async def _hold(self, conn: _Conn) -> bool:
        """Wait while blackholed (bounded by the connection's life); False if it ended."""
        while self._mode.kind == BLACKHOLE and not conn.dropped:
            changed = self._mode_changed
            assert changed is not None
            waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(conn.done.wait())}
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        return not conn.dropped and not conn.poisoned

    async def _connect(self, conn: _Conn) -> bool:
        try:
            conn.up_r, conn.up_w = await asyncio.wait_for(
                asyncio.open_connection(*self.target), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._count("upstream_errors")
            self._event("upstream_error", conn.id, repr(exc))
            _rst(conn.client_w)
            return False
        if conn.dropped:
            _close(conn.up_w)
            return False
        conn.upstream.set_result(None)
        return True

    def _drop(self, conn: _Conn, *, rst: bool) -> None:
        """End a connection at once (idempotent); pumps see EOF and finish."""
        if conn.dropped:
            return
        conn.dropped = True
        conn.done.set()
        if not conn.upstream.done():
            conn.upstream.set_result(None)
        if rst:
            self._count("resets")
            self._event("reset", conn.id)
        for writer in (conn.client_w, conn.up_w):
            (_rst if rst else _close)(writer)

    async def _pump_up(self, conn: _Conn) -> None:
        """client -> server, until EOF or the connection is dropped."""
        try:
            while not conn.dropped:
                data = await conn.client_r.read(self.chunk_size)
                if not data:
                    self._half_close(conn, conn.up_w if conn.upstream.done() else None)
                    return
                for head in conn.requests.feed(data):
                    self._event("request", conn.id, head.request_line)
                if self._mode.kind == BLACKHOLE:
                    self._discard(conn, data)
                    continue
                await conn.upstream
                await self._delay()
                if conn.dropped or conn.up_w is None:
                    return
                await self._forward(conn.up_w, data, "bytes_up")
        except (OSError, asyncio.IncompleteReadError):
            self._drop(conn, rst=False)

    async def _pump_down(self, conn: _Conn) -> None:
        """server -> client, until EOF, a WebSocket cut, or the connection is dropped."""
        assert conn.up_r is not None
        try:
            while not conn.dropped:
                data = await conn.up_r.read(self.chunk_size)
                if not data:
                    self._half_close(conn, conn.client_w)
                    return
                if self._mode.kind == BLACKHOLE:
                    self._discard(conn, data)
                    continue
                await self._delay()
                if conn.dropped:
                    return
                data, cut = self._ws_filter(conn, data)
                await self._forward(conn.client_w, data, "bytes_down")
                if cut:
                    self._count("ws_cuts")
                    self._event("cut", conn.id, f"at byte {conn.cut_at} of the frame stream")
                    self._drop(conn, rst=False)
                    return
        except (OSError, asyncio.IncompleteReadError):
            self._drop(conn, rst=False)

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes, counter: str) -> None:
        if data:
            writer.write(data)
            await writer.drain()
            self._count(counter, len(data))

    async def _delay(self) -> None:
        mode = self._mode
        if mode.kind == DELAY and mode.delay_ms > 0:
            await asyncio.sleep(mode.delay_ms / 1000)

    def _discard(self, conn: _Conn, data: bytes) -> None:
        conn.poisoned = True
        self._count("dropped", len(data))

    def _half_close(self, conn: _Conn, writer: asyncio.StreamWriter | None) -> None:
        """Pass an EOF on; drop the connection when the other side cannot take it."""
        if conn.dropped:
            return
        if writer is None or not writer.can_write_eof() or writer.is_closing():
            self._drop(conn, rst=False)
            return
        try:
            writer.write_eof()
        except OSError:
            self._drop(conn, rst=False)

    def _ws_filter(self, conn: _Conn, data: bytes) -> tuple[bytes, bool]:
        """Track the upgrade and frames; with an armed cut, return the bytes up to it."""
        prefix = b""
        if conn.frames is None:
            head_len = conn.upgrade.feed(data)
            if head_len is None or not conn.upgrade.upgraded:
                return data, False
            conn.frames = FrameTracker()
            self._event("upgrade", conn.id, conn.upgrade.status_line)
            prefix, data = data[:head_len], data[head_len:]
        base = conn.frames.offset
        frames = conn.frames.feed(data)
        if conn.cut_from is not None and conn.cut_at is None:
            later = [f for f in frames if f.start >= conn.cut_from]
            if later:
                conn.cut_at = later[0].midpoint()
        if conn.cut_at is not None and conn.cut_at < base + len(data):
            return prefix + data[: max(0, conn.cut_at - base)], True
        return prefix + data, False
