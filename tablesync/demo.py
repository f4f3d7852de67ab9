"""``tablesync demo``: the local backend, two provisioned systems, two engines, two pages.

:class:`Demo` starts the devserver (PostgreSQL + auth/REST/Realtime on 127.0.0.1) with the
``supabase.sql`` generated from the project's ``sync.toml``, creates one user per system
with ``app_metadata.system_id`` through the admin API, writes one config file per system
into the demo folder (so ``tablesync sync status -c data/demo/system-a.toml`` works too),
and runs one engine and one status page per system in this process. :meth:`Demo.stop`
undoes all of it in reverse order. :func:`instructions` is the text printed for a human.

Layer 5 (an edge): it wires the devserver, the engine and the web page together.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tablesync import daemon
from tablesync.config import SyncConfig
from tablesync.engine import Engine
from tablesync.errors import ConfigError, RemoteError, TablesyncError
from tablesync.generate import artifacts, write
from tablesync.project import Project, load_project
from tablesync.vault import Secret

__all__ = ["Demo", "DemoInfo", "DemoSystem", "instructions", "system_config_text"]

SYSTEMS = ("system-a", "system-b")
MARKER = ".tablesync-demo"          # only a folder holding it may be wiped by --reset
PASSWORDS = "passwords.json"        # 0600; the demo users' random passwords (re-runs)
READY_TIMEOUT = 30.0                # seconds to wait for both engines to connect


@dataclass(frozen=True)
class DemoSystem:
    """One demo system: its id, SQLite file, config file and status page."""

    id: str
    database: str
    config: str
    status_url: str
    email: str
    page_link: str = ""  # a one-time link that opens the page (sets its cookie)


@dataclass(frozen=True)
class DemoInfo:
    """What the demo prints: the backend's URL and local keys, and each system's files."""

    dir: str
    backend_url: str
    anon_key: str = field(repr=False)
    service_key: str = field(repr=False)
    systems: tuple[DemoSystem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["systems"] = {s.id: asdict(s) for s in self.systems}
        return d


# ----------------------------------------------------------------- pure helpers

def _toml(value: Any) -> str:
    """A TOML literal for a str/bool/int/float (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(getattr(value, "value", value)))


def _section(name: str, values: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
    return lines + [""]


def system_config_text(base: SyncConfig, *, system_id: str, url: str, anon_key: str,
                       email: str, status_port: int) -> str:
    """A ``sync.toml`` for one demo system: ``base``'s tables and timing, this system's id,
    files next to the config (``<id>.db``, ``<id>.auth.json``, ...) and the local backend."""
    sync = base.sync.model_dump()
    sync["debounce"] = min(sync["debounce"], 0.05)
    lines = ["# Written by `tablesync demo`; rewritten on every run.", ""]
    lines += _section("system", {"id": system_id, "database": f"{system_id}.db"})
    lines += _section("supabase", {"url": url, "anon_key": anon_key, "email": email})
    lines += _section("sync", sync)
    lines += _section("paths", {"schemas": str(base.schemas_dir),
                                "token_store": f"{system_id}.auth.json",
                                "conflict_log": f"{system_id}.conflicts.log"})
    lines += _section("status", {"port": status_port, "host": "127.0.0.1"})
    for name, table in base.tables.items():
        lines += _section(f"tables.{name}", {
            "schema": table.schema_, "primary_key": table.primary_key, "scope": table.scope,
            "priority": table.priority, "on_delete_conflict": table.on_delete_conflict})
    return "\n".join(lines)


def _rel(path: str) -> str:
    """``path`` relative to the current directory when it is below it (shorter to type)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) \
            else path
    except ValueError:
        return path


def instructions(info: DemoInfo, command: str = "tablesync") -> str:
    """The human-readable "what to open, what to try" text (``command``: how to call
    tablesync from the user's shell, e.g. ``.venv/bin/tablesync``)."""
    a, b = info.systems[0], info.systems[1]
    db_a, db_b = shlex.quote(_rel(a.database)), shlex.quote(_rel(b.database))
    insert = ("insert into tasks (id, system_id, title) "
              f"values ('t1', '{a.id}', 'hello from {a.id}')")
    py = ('python3 -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); '
          'c.execute(sys.argv[2]); c.commit()"')
    py_select = ('python3 -c "import sqlite3, sys; '
                 'print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())"')
    body = json.dumps({"id": "t2", "system_id": b.id, "title": "hello from REST"})
    sel_b = "select id, system_id, title from tasks"
    url = info.backend_url
    return "\n".join([
        f"tablesync demo is running (files in {_rel(info.dir)}). Press Ctrl-C to stop.",
        "",
        "Open the status pages (one-time links; `tablesync sync page -c <config>` prints "
        "fresh ones):",
        f"  {a.id}: {a.page_link or a.status_url}",
        f"  {b.id}: {b.page_link or b.status_url}",
        "",
        f"Local backend (Supabase-compatible): {url}",
        f"  anon key:         {info.anon_key}",
        f"  service_role key: {info.service_key}",
        "",
        f"1. Write to {a.id}'s SQLite file with plain SQL; the row is pushed to the backend:",
        f"     sqlite3 {db_a} \"{insert}\"",
        "   without the sqlite3 program:",
        f"     {py} {db_a} \"{insert}\"",
        "   then look at it on the server (the service key bypasses row-level security):",
        f"     export SERVICE_KEY={info.service_key}",
        f"     curl -s '{url}/rest/v1/tasks?select=id,system_id,title' "
        "-H \"apikey: $SERVICE_KEY\" -H \"Authorization: Bearer $SERVICE_KEY\"",
        "",
        f"2. Create a task for {b.id} over REST; Realtime brings it to {b.id}'s SQLite file:",
        f"     curl -s -X POST '{url}/rest/v1/tasks' -H \"apikey: $SERVICE_KEY\" "
        "-H \"Authorization: Bearer $SERVICE_KEY\" -H 'Content-Type: application/json' "
        f"-d '{body}'",
        f"     sqlite3 {db_b} \"{sel_b}\"",
        f"   or: {py_select} {db_b} \"{sel_b}\"",
        f"   {a.id} never receives it: each system pulls only rows whose system_id is its own.",
        "",
        "3. Operate a system from another terminal:",
        f"     {command} sync status -c {shlex.quote(_rel(a.config))}",
        f"     {command} sync now -c {shlex.quote(_rel(a.config))}",
        f"     {command} sync conflicts -c {shlex.quote(_rel(a.config))}",
    ])


# ----------------------------------------------------------------- the demo


@dataclass
class _Running:
    project: Project
    engine: Engine
    status: Any  # tablesync.web.server.StatusServer


class Demo:
    """Start/stop the whole local demo.

    Args:
        config: the project's ``sync.toml`` (tables and timing come from it).
        directory: the demo folder (backend data, SQLite files, per-system configs).
        port: the backend's HTTP port (0 = any free port).
        status_port: system-a's status page port; system-b uses the next one
            (0 = free ports for both).
        reset: delete the demo folder first (only if an earlier demo created it).
        on_state: called with (system id, state name) whenever an engine's state changes.
    """

    def __init__(self, config: str | os.PathLike[str] = "sync.toml",
                 directory: str | os.PathLike[str] = "data/demo", *, port: int = 54321,
                 status_port: int = 8787, reset: bool = False,
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self.config_path = Path(config)
        self.dir = Path(directory).resolve()
        self.port, self.status_port, self.reset = port, status_port, reset
        self.on_state = on_state
        self._server: Any = None  # tablesync.devserver.server.DevServer
        self._running: list[_Running] = []
        self.connected = False  # both engines reached Connected within the ready timeout

    def __enter__(self) -> DemoInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ------------------------------------------------------------------
    def start(self, ready_timeout: float = READY_TIMEOUT) -> DemoInfo:
        """Start everything; return once both engines are connected (or after the
        timeout, with the engines still trying). Stops what was started on failure."""
        base = load_project(self.config_path)
        self._prepare_dir()
        try:
            return self._start(base, ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _prepare_dir(self) -> None:
        if self.reset and self.dir.exists():
            if not (self.dir / MARKER).exists():
                raise TablesyncError(f"refusing to delete {self.dir}: not a demo folder",
                                     hint=f"it has no {MARKER} file; pick another --dir")
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / MARKER).touch()

    def _start(self, base: Project, ready_timeout: float) -> DemoInfo:
        # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (harmless; noise
        # on a fresh machine's first screen)
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from tablesync.devserver.errors import DevServerError
        from tablesync.devserver.server import DevServer

        sql = self._generate(base)
        self._server = DevServer(data_dir=self.dir / "backend", port=self.port, apply=[sql])
        try:
            info = self._server.start()
        except DevServerError as exc:  # the devserver's own errors -> the library's
            raise TablesyncError(exc.args[0], hint=exc.hint) from exc
        passwords = self._passwords()
        systems = []
        for n, system_id in enumerate(SYSTEMS):
            email = f"{system_id}@demo.tablesync.local"
            self._provision(base.config, info.url, info.anon_key, info.service_key,
                            system_id, email, passwords[system_id])
            port = self.status_port + n if self.status_port else 0
            cfg = self.dir / f"{system_id}.toml"
            cfg.write_text(system_config_text(base.config, system_id=system_id, url=info.url,
                                              anon_key=info.anon_key, email=email,
                                              status_port=port), encoding="utf-8")
            run = self._run_engine(cfg, passwords[system_id])
            systems.append(DemoSystem(id=system_id, database=str(run.project.config.database_path),
                                      config=str(cfg), status_url=run.status.url, email=email,
                                      page_link=run.status.login_link()))
        self._wait_connected(ready_timeout)
        return DemoInfo(dir=str(self.dir), backend_url=info.url, anon_key=info.anon_key,
                        service_key=info.service_key, systems=tuple(systems))

    def _generate(self, base: Project) -> Path:
        """Write the project's generated files into the demo folder; return supabase.sql."""
        out = self.dir / "generated"
        arts = [a for a in artifacts(base, out) if a.path.parent == out]
        write(arts)
        return out / "supabase.sql"

    def _passwords(self) -> dict[str, str]:
        """The demo users' passwords: random on the first run, reused afterwards (0600)."""
        path = self.dir / PASSWORDS
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict) or not all(isinstance(stored.get(s), str)
                                                   for s in SYSTEMS):
            stored = {s: secrets.token_urlsafe(24) for s in SYSTEMS}
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh)
        return stored

    @staticmethod
    def _provision(cfg: SyncConfig, url: str, anon_key: str, service_key: str,
                   system_id: str, email: str, password: str) -> None:
        """Create the system's user (``tablesync provision``); an existing one is kept."""
        from tablesync.config import SupabaseConfig
        from tablesync.session import provision

        target = cfg.model_copy(update={"supabase": SupabaseConfig(url=url, anon_key=anon_key)})
        try:
            provision(target, system_id=system_id, email=email, password=Secret(password),
                      service_key=Secret(service_key))
        except RemoteError as exc:
            if exc.status != 422:  # 422 email_exists: created by an earlier run
                raise

    def _run_engine(self, cfg: Path, password: str) -> _Running:
        from tablesync.web.server import StatusServer

        project = load_project(cfg)
        engine = daemon.build_engine(project, password=Secret(password))
        status = StatusServer.from_config(engine, project.config.status)
        assert status is not None  # the config written above always sets a port
        run = _Running(project, engine, status)
        self._running.append(run)
        system_id = project.config.system.id
        if self.on_state is not None:
            callback = self.on_state
            engine.on_state(lambda st: callback(system_id, str(st.state)))
        try:
            status.start()
        except ConfigError as exc:
            raise TablesyncError(f"{system_id}'s status page port {status.port} is in use",
                                 hint="pass --status-port (0 = free ports)") from exc
        daemon.write_control(project, status.url, status.csrf_token, status.api_token)
        engine.start()
        return run

    def _wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r.engine.snapshot().state == "Connected" for r in self._running):
                self.connected = True
                return
            time.sleep(0.1)

    # -- stop -------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the status pages, the engines, then the backend and PostgreSQL
        (each step bounded; idempotent)."""
        while self._running:
            run = self._running.pop()
            daemon.remove_control(run.project)
            run.status.stop()
            run.engine.close()
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
