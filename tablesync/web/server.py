"""Run the status app with uvicorn on a background thread: start() / stop()."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import uvicorn

from tablesync.config import StatusConfig
from tablesync.errors import ConfigError, TablesyncError
from tablesync.web.app import LOOPBACK_NAMES, WebOptions, create_app
from tablesync.web.auth import Auth
from tablesync.web.provider import StatusProvider

DEFAULT_START_TIMEOUT_S = 10.0
DEFAULT_STOP_TIMEOUT_S = 5.0


class StatusServer:
    """The status page of one system, served on ``host:port`` from a daemon thread.

    ``port=0`` picks a free port; :meth:`start` returns the port actually bound.
    """

    def __init__(
        self, provider: StatusProvider, host: str = "127.0.0.1", port: int = 0, *,
        options: WebOptions | None = None,
    ) -> None:
        self.host, self.port = host, port
        opts = options or WebOptions()
        hosts = tuple(dict.fromkeys((*opts.allowed_hosts, *_allowed_hosts(host))))
        self.options = replace(opts, allowed_hosts=hosts)
        self.app = create_app(provider, self.options)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, provider: StatusProvider, config: StatusConfig) -> StatusServer | None:
        """The server ``[status]`` asks for, or None when no port is configured (off)."""
        if config.port is None:
            return None
        options = WebOptions(allowed_hosts=(*LOOPBACK_NAMES, *config.allowed_hosts))
        return cls(provider, config.host, config.port, options=options)

    @property
    def csrf_token(self) -> str:
        """The token ``POST /api/sync`` needs in the ``X-CSRF-Token`` header."""
        return self.options.csrf_token

    @property
    def api_token(self) -> str:
        """The bearer token of the API (written to the engine's 0600 control file)."""
        return self.options.api_token

    def login_link(self) -> str:
        """A fresh one-time link that opens the page in a browser (sets its cookie)."""
        auth: Auth = self.app.state.auth
        return f"{self.url}/?token={auth.mint_link()}"

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` for API calls from this process (CLI, tests)."""
        return {"Authorization": f"Bearer {self.api_token}"}

    @property
    def url(self) -> str:
        """The base URL on this machine (loopback when bound to all interfaces: what the
        engine prints and announces to the CLI)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = DEFAULT_START_TIMEOUT_S) -> int:
        """Bind, serve in the background, and return the bound port."""
        if self._thread is not None:
            raise TablesyncError("status server already started")
        sock = self._bind()
        self.port = sock.getsockname()[1]
        # log_config=None: uvicorn's records go through tablesync's log setup (timestamps)
        config = uvicorn.Config(self.app, log_level="warning", log_config=None,
                                access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"tablesync-status:{self.port}", daemon=True)
        self.options.stop.clear()
        self._thread.start()
        self._wait_started(timeout, sock)
        return self.port

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """End live streams, stop the server and join its thread (bounded by ``timeout``)."""
        if self._server is None or self._thread is None:
            return
        self.options.stop.set()
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server, self._thread = None, None

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}",
                              location="sync.toml [status] port",
                              hint="pick a free port, or 0 for any") from exc
        sock.set_inheritable(True)
        return sock

    def _wait_started(self, timeout: float, sock: socket.socket) -> None:
        deadline = time.monotonic() + timeout
        assert self._server is not None and self._thread is not None
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise TablesyncError(f"status server on {self.url} did not start")
            time.sleep(0.01)


def _allowed_hosts(host: str) -> tuple[str, ...]:
    """Host headers to accept besides ``[status] allowed_hosts``: the loopback names and
    ``host``; bound to all interfaces, also this machine's host name (never any name:
    a DNS-rebinding page must not get through)."""
    if host in ("0.0.0.0", "::", ""):
        name = socket.gethostname().lower()
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, "::1", name, name.split(".")[0])))
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, host.lower())))
