"""Small real servers on 127.0.0.1 for proxy tests: TCP echo, HTTP, WebSocket.

Each runs in threads, listens on a free port and stops in bounded time (``stop()`` closes
the listener, ends every connection and joins every thread it started).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from websockets.sync.server import Server, ServerConnection, serve

POLL = 0.05
JOIN_TIMEOUT = 5.0


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(POLL)
        stopping: threading.Event = self.server.stopping  # type: ignore[attr-defined]
        while not stopping.is_set():        # bounded by stop()
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            sock.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; ``port`` after construction."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.stopping = threading.Event()
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, args=(POLL,),
                                        name="echo-server")
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()            # joins the handler threads (block_on_close)
        self._thread.join(JOIN_TIMEOUT)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                           # resets are what the tests inject


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 2.0                      # an idle keep-alive connection ends after this

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._reply(200, b"pong")
        elif self.path.startswith("/fail"):
            self._reply(503, b"unavailable", {"Retry-After": "1"})
        else:
            self._reply(404, b"not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._reply(200, self.rfile.read(length))

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpServer(socketserver.ThreadingMixIn, HTTPServer):
    """GET /ping -> pong, GET /fail* -> 503, POST /* -> echoes the body."""

    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HttpHandler)
        self.port = int(self.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.serve_forever, args=(POLL,),
                                        name="http-server")
        self._thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                           # resets are what the tests inject

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(JOIN_TIMEOUT)


class WsServer:
    """WebSocket echo; the message ``size:<n>`` is answered with ``n`` bytes of text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: set[ServerConnection] = set()
        self._threads: set[threading.Thread] = set()
        self._server: Server = serve(self._handler, "127.0.0.1", 0, ping_interval=None)
        self.port = int(self._server.socket.getsockname()[1])
        self.url = f"ws://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="ws-server")
        self._thread.start()

    def _handler(self, ws: ServerConnection) -> None:
        with self._lock:
            self._conns.add(ws)
            self._threads.add(threading.current_thread())
        try:
            for message in ws:             # ends when the connection closes
                text = message if isinstance(message, str) else message.decode()
                ws.send("x" * int(text[5:]) if text.startswith("size:") else text)
        except Exception:                  # a cut connection ends the handler
            pass
        finally:
            with self._lock:
                self._conns.discard(ws)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(JOIN_TIMEOUT)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for ws in conns:
            ws.close()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
