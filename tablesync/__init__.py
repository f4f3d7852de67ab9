"""tablesync: offline-first bidirectional sync between local SQLite and Supabase.

The public API. An app loads its project, builds an engine and runs it in a background
thread (``docs/embedding.md``)::

    import tablesync

    project = tablesync.load_project("sync.toml")
    engine = tablesync.build_engine(project)
    engine.start()

``import tablesync`` never imports the devserver, the status page's web framework or
psycopg (``tests/test_api.py``); those are edges (``docs/architecture.md``).
"""

from __future__ import annotations

from tablesync.config import SyncConfig, load_config
from tablesync.daemon import build_engine
from tablesync.engine import Engine, EngineStatus
from tablesync.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DeadSessionError,
    DuplicateReplicaError,
    ExpiredTokenError,
    ForbiddenError,
    GenerateError,
    PayloadError,
    RemoteError,
    StoreError,
    TablesyncError,
    TransientRemoteError,
    VaultError,
)
from tablesync.generate import generate
from tablesync.lww import resolve, sort_key
from tablesync.machine import State
from tablesync.model import (
    ApplyOutcome,
    Change,
    ColumnSpec,
    Conflict,
    DeletePolicy,
    ForeignKey,
    Op,
    Outcome,
    RowState,
    TableSpec,
    Version,
)
from tablesync.project import Project, load_project
from tablesync.vault import Secret

__all__ = [
    "ApplyOutcome",
    "AuthError",
    "Change",
    "ColumnSpec",
    "ConfigError",
    "Conflict",
    "ConflictError",
    "DeadSessionError",
    "DeletePolicy",
    "DuplicateReplicaError",
    "Engine",
    "EngineStatus",
    "ExpiredTokenError",
    "ForbiddenError",
    "ForeignKey",
    "GenerateError",
    "Op",
    "Outcome",
    "PayloadError",
    "Project",
    "RemoteError",
    "RowState",
    "Secret",
    "State",
    "StoreError",
    "SyncConfig",
    "TableSpec",
    "TablesyncError",
    "TransientRemoteError",
    "VaultError",
    "Version",
    "build_engine",
    "generate",
    "load_config",
    "load_project",
    "resolve",
    "sort_key",
]
