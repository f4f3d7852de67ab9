"""tablesync: offline-first bidirectional sync between local SQLite and Supabase."""

from __future__ import annotations

from tablesync.config import SyncConfig, load_config
from tablesync.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    GenerateError,
    PayloadError,
    RemoteError,
    StoreError,
    TablesyncError,
    TransientRemoteError,
    VaultError,
)
from tablesync.lww import resolve, sort_key
from tablesync.model import DeletePolicy, RowState, Version

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "DeletePolicy",
    "GenerateError",
    "PayloadError",
    "RemoteError",
    "RowState",
    "StoreError",
    "SyncConfig",
    "TablesyncError",
    "TransientRemoteError",
    "VaultError",
    "Version",
    "load_config",
    "resolve",
    "sort_key",
]
