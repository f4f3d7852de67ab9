"""Run the devserver: PostgreSQL + the HTTP app under uvicorn, in a background thread.

``DevServer(...).start()`` returns :class:`DevServerInfo` (url, keys, dsn); ``stop()``
stops uvicorn and (if it started it) PostgreSQL. It can be started again on the same port
and data directory, which tests use to simulate the backend going offline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tablesync.devserver import postgres
from tablesync.devserver.faults import Faults
from tablesync.devserver import jwt
from tablesync.devserver.settings import (
    DEFAULT_ANON_STATEMENT_TIMEOUT, DEFAULT_HOST, DEFAULT_JWT_EXP, DEFAULT_MAX_ROWS,
    DEFAULT_REALTIME_MAX_PAYLOAD_KB, DEFAULT_REALTIME_RATE_LIMIT, DEFAULT_REFRESH_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT, JWT_SIGNING, Clock, Settings, load_or_create_secret, load_or_create_signing_key)
from tablesync.devserver.errors import DevServerError

DATABASE = "postgres"
START_TIMEOUT = 30.0
GRACEFUL_SHUTDOWN = 5  # seconds uvicorn waits for open requests/websockets on stop


@dataclass(frozen=True)
class DevServerInfo:
    """What a client needs: base URL and the two API keys (plus the database DSN)."""

    url: str
    anon_key: str
    service_key: str
    dsn: str = field(repr=False)
    publishable_key: str = ""  # sb_publishable_... (maps to anon)
    secret_key: str = ""       # sb_secret_... (maps to service_role)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def __repr__(self) -> str:  # keys are secrets
        return f"DevServerInfo(url={self.url!r})"


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def apply_sql_file(dsn: str, path: str | os.PathLike[str]) -> None:
    """Run a SQL file (e.g. a generated ``supabase.sql``) against ``dsn``."""
    import psycopg

    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise DevServerError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(text.encode())
    except psycopg.Error as exc:
        raise DevServerError(f"{file}: PostgreSQL refused it: {exc}".strip()) from exc


class DevServer:
    """The local Supabase-compatible backend, started and stopped from Python.

    ``clock`` (Unix seconds, default ``time.time``) is the time auth lives on: the ``iat``
    and ``exp`` it stamps, the ``exp`` checks of REST, auth and Realtime, the refresh-token
    reuse window. Tests share a manual clock with the client and advance it instead of
    sleeping until a token expires. (PostgreSQL's ``now()`` still stamps rows and bans.)
    """

    def __init__(self, *, data_dir: str | os.PathLike[str] | None = None, dsn: str | None = None,
                 host: str = DEFAULT_HOST, port: int = 0, jwt_exp: int = DEFAULT_JWT_EXP,
                 jwt_secret: str | None = None, apply: Sequence[str | os.PathLike[str]] = (),
                 enable_faults: bool = False, realtime: Any = None,
                 auto_realtime: bool = True, clock: Clock = time.time,
                 max_rows: int = DEFAULT_MAX_ROWS,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 anon_statement_timeout: float = DEFAULT_ANON_STATEMENT_TIMEOUT,
                 toast_omission: bool = True,
                 realtime_rate_limit: int = DEFAULT_REALTIME_RATE_LIMIT,
                 private_only_channels: bool = False,
                 realtime_max_payload_kb: int = DEFAULT_REALTIME_MAX_PAYLOAD_KB,
                 refresh_lock_timeout: float = DEFAULT_REFRESH_LOCK_TIMEOUT,
                 jwt_signing: str = "hs256", **settings: Any) -> None:
        """Keywords after ``clock`` are the hosted behaviours (docs/devserver.md,
        "Hosted behaviours"); other keywords go to :class:`Settings`."""
        if jwt_signing not in JWT_SIGNING:
            raise DevServerError(f"unknown JWT signing {jwt_signing!r}",
                                 hint="use " + " or ".join(JWT_SIGNING))
        self._owns_data = data_dir is None and dsn is None
        if self._owns_data:
            data_dir = tempfile.mkdtemp(prefix="tablesync-devserver-")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._external_dsn = dsn
        self.host, self.port, self.jwt_exp = host, port, jwt_exp
        self._secret = jwt_secret
        self._apply = list(apply)
        self._enable_faults = enable_faults
        self._realtime, self._auto_realtime = realtime, auto_realtime
        self._extra = dict(settings, max_rows=max_rows, statement_timeout=statement_timeout,
                           anon_statement_timeout=anon_statement_timeout,
                           toast_omission=toast_omission,
                           realtime_rate_limit=realtime_rate_limit,
                           private_only_channels=private_only_channels,
                           realtime_max_payload_kb=realtime_max_payload_kb,
                           refresh_lock_timeout=refresh_lock_timeout, jwt_signing=jwt_signing)
        self.clock = clock
        self._signing_key: jwt.SigningKey | None = None
        self._app: Any = None
        self.faults = Faults()
        self._applied = False
        self._pg: postgres.PostgresServer | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.settings: Settings | None = None

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> DevServerInfo:
        """Start PostgreSQL (if needed) and the HTTP server; return once it accepts requests."""
        if self._thread is not None:
            raise DevServerError("devserver is already running")
        dsn = self._start_postgres()
        if not self.port:
            self.port = free_port(self.host)
        self.settings = Settings.create(
            dsn, self._jwt_secret(), host=self.host, port=self.port, jwt_exp=self.jwt_exp,
            enable_faults=self._enable_faults, clock=self.clock, signing_key=self._key(),
            **self._extra)
        try:
            self._serve()
        except BaseException:
            self._stop_postgres()
            raise
        return self.info

    @property
    def info(self) -> DevServerInfo:
        if self.settings is None:
            raise DevServerError("devserver is not running")
        s = self.settings
        return DevServerInfo(url=s.url, anon_key=s.anon_key, service_key=s.service_key, dsn=s.dsn,
                             publishable_key=s.publishable_key, secret_key=s.secret_key)

    def restart_capture(self) -> None:
        """Restart Realtime's change capture (as when its replication process restarts):
        every joined channel with postgres_changes gets a second "Subscribed to PostgreSQL"
        system message and stays open. Returns once capture runs again."""
        service = self._app.state.realtime() if self._app is not None else None
        if service is None or not hasattr(service, "restart_capture_threadsafe"):
            raise DevServerError("realtime is not running")
        service.restart_capture_threadsafe()

    def stop(self, *, keep_postgres: bool = False) -> None:
        """Stop uvicorn, then PostgreSQL (if this object started it and ``keep_postgres`` is
        false: then only the HTTP side goes offline, and ``start()`` is quicker). Idempotent."""
        self._stop_http()
        if not keep_postgres:
            self._stop_postgres()

    def cleanup(self) -> None:
        """Stop, and delete the data directory if this object created a temporary one."""
        self.stop()
        if self._owns_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def listening(self) -> list[tuple[str, int]]:
        """The (host, port) of every socket uvicorn listens on."""
        if self._server is None:
            return []
        return [sock.getsockname()[:2] for srv in self._server.servers for sock in srv.sockets]

    def __enter__(self) -> DevServerInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- parts ------------------------------------------------------------------
    def _jwt_secret(self) -> str:
        if self._secret is None:
            if self.data_dir is not None:
                self._secret = load_or_create_secret(self.data_dir)
            else:
                import secrets

                self._secret = secrets.token_urlsafe(48)
        return self._secret

    def _key(self) -> jwt.SigningKey | None:
        """The ES256 signing key (``jwt_signing="asymmetric"``): per data dir, persisted."""
        if self._extra.get("jwt_signing") != "asymmetric":
            return None
        if self._signing_key is None:
            self._signing_key = (load_or_create_signing_key(self.data_dir)
                                 if self.data_dir is not None else jwt.SigningKey.generate())
        return self._signing_key

    def _start_postgres(self) -> str:
        if self._external_dsn is not None:
            dsn = self._external_dsn
        else:
            assert self.data_dir is not None
            if self._pg is None:
                self._pg = postgres.start(self.data_dir / "pg")
            dsn = self._pg.dsn(DATABASE)
        postgres.bootstrap(dsn)
        if not self._applied:  # --apply files run once, not again on every restart
            for path in self._apply:
                apply_sql_file(dsn, path)
            self._applied = True
        return dsn

    def _stop_postgres(self) -> None:
        if self._pg is not None:
            pg, self._pg = self._pg, None
            pg.stop()

    def _serve(self) -> None:
        import uvicorn

        from tablesync.devserver.app import create_app

        assert self.settings is not None
        app = create_app(self.settings, self._realtime, faults=self.faults,
                         auto_realtime=self._auto_realtime)
        self._app = app
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                log_config=None, lifespan="on", access_log=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run_uvicorn, name="tablesync-devserver",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop_http()
                raise DevServerError(f"devserver could not start on {self.host}:{self.port}",
                                     hint="port in use (try --port) or a startup error "
                                     "logged above")
            time.sleep(0.02)

    def _run_uvicorn(self) -> None:
        """Thread body: uvicorn exits with SystemExit when it cannot bind or start."""
        try:
            self._server.run()
        except SystemExit:
            pass

    def _stop_http(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT)
        self._thread, self._server = None, None

