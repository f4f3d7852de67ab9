"""The real stack for reliability/security tests: devserver + PostgreSQL + engines.

Helpers only (no tests): a backend with the example schema and one user per system,
per-system ``sync.toml`` files, engines wired like ``tests/test_engine.py``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import psycopg

from tablesync.clock import TimeSource
from tablesync.daemon import realtime_factory
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.project import Project, load_project
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.sql import postgres
from tablesync.vault import Secret, Vault

from helpers import wait_for  # re-exported: tests import it from here too

ROOT = Path(__file__).resolve().parents[2]
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]


def password(system: str) -> str:
    return "pw-" + system + "-Zq7!"


def email(system: str) -> str:
    return f"{system}@example.com"


def create_schema(dsn: str) -> None:
    project = load_project(ROOT / "sync.toml")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())


def create_users(info: DevServerInfo, systems: Iterable[str]) -> None:
    with RestRemote(info.url, info.anon_key) as admin:
        for system in systems:
            admin.admin_create_user(Secret(info.service_key), email(system),
                                    Secret(password(system)), {"system_id": system})


def start_backend(dsn: str, systems: Iterable[str] = ("system-a", "system-b"),
                  **kw: Any) -> DevServer:
    """Schema + devserver on ``dsn`` + one user per system."""
    create_schema(dsn)
    srv = DevServer(dsn=dsn, **kw)
    srv.start()
    create_users(srv.info, systems)
    return srv


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_config(tmp: Path, info: DevServerInfo | None, system: str, *,
                 with_password: bool = False, **sync: Any) -> Path:
    """A sync.toml for ``system`` in ``tmp`` (database, vault, logs inside ``tmp``)."""
    cfg = tmp / f"{system}.toml"
    settings = {"interval": 1.0, "debounce": 0.01, "poll_interval": 2.0, **sync}
    remote = ""
    if info is not None:
        remote = (f'[supabase]\nurl = "{info.url}"\nanon_key = "{info.anon_key}"\n'
                  f'email = "{email(system)}"\n')
        if with_password:
            remote += f'password = "{password(system)}"\n'
    cfg.write_text(
        f'[system]\nid = "{system}"\ndatabase = "{tmp / system}.db"\n{remote}'
        "[sync]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()) +
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp / system}-auth.json"\n'
        f'conflict_log = "{tmp / system}-conflicts.log"\n[tables.projects]' + TABLES)
    return cfg


def project_for(tmp: Path, info: DevServerInfo | None, system: str, **sync: Any) -> Project:
    return load_project(write_config(tmp, info, system, **sync))


def engine_for(tmp: Path, info: DevServerInfo, system: str, *, clock: TimeSource = time.time,
               **sync: Any) -> Engine:
    """An engine with the real REST + Realtime clients and an encrypted vault (its session
    on ``clock``: pass the devserver's when a test moves time)."""
    project = project_for(tmp, info, system, **sync)
    remote = RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(tmp / f"{system}-auth.json"), project=info.url,
                      email=email(system), password=Secret(password(system)), clock=clock)
    remote.tokens = session
    return Engine(project, remote=remote, session=session, realtime_factory=realtime_factory,
                  own_remote=True)


def app_db(tmp: Path, system: str) -> sqlite3.Connection:
    """The application's own plain sqlite3 connection (autocommit)."""
    return sqlite3.connect(tmp / f"{system}.db", isolation_level=None, timeout=30)


def pg(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []
