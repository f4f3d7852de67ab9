"""Wiring: an :class:`~tablesync.engine.Engine` built from ``sync.toml`` with the real
REST and Realtime clients, the encrypted vault and a session (layer 4: orchestration).

``build_engine(project)`` is what ``tablesync run`` and embedding apps use; tests build
engines with their own remotes instead.
"""

from __future__ import annotations

from typing import Any

from tablesync.engine import Engine
from tablesync.project import Project
from tablesync.remote.base import TableChannel
from tablesync.remote.realtime import RealtimeClient
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.store import LocalStore
from tablesync.vault import Secret, Vault

__all__ = ["build_engine", "realtime_factory"]


def realtime_factory(url: str, anon_key: str, channels: list[TableChannel],
                     **kw: Any) -> RealtimeClient:
    """The default Realtime client (vsn 2.0.0, 25 s heartbeat)."""
    return RealtimeClient(url, anon_key, channels, **kw)


def build_engine(project: Project, *, store: LocalStore | None = None,
                 password: Secret | None = None) -> Engine:
    """An engine for ``project``: local-only without ``[supabase]``, else REST + Realtime
    with tokens from the vault at ``paths.token_store`` (password from the config/env)."""
    cfg = project.config
    if cfg.supabase is None:
        return Engine(project, store=store)
    sb = cfg.supabase
    remote = RestRemote(sb.url, sb.anon_key, tables={t.name: t for t in project.tables})
    if password is None and sb.password is not None:
        password = Secret(sb.password.get_secret_value())
    session = Session(remote, Vault(cfg.resolve_path(cfg.paths.token_store)), project=sb.url,
                      email=sb.email, password=password)
    remote.tokens = session
    factory = realtime_factory if cfg.sync.realtime else None
    return Engine(project, store=store, remote=remote, session=session,
                  realtime_factory=factory, own_remote=True)
