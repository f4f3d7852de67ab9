"""``sync.toml`` as frozen pydantic models, loaded with ``TABLESYNC_*`` env overrides.

Precedence, highest first: environment (``TABLESYNC_SUPABASE__URL``,
``TABLESYNC_TABLES__TASKS__PRIORITY``, ...), then the file, then the defaults below.
Secrets (``supabase.password``, ``supabase.service_key``) are read from the environment
only; a secret written into the file is refused so it never lands in version control.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tablesync.errors import ConfigError
from tablesync.model import DeletePolicy, TableSpec

DEFAULT_CONFIG = "sync.toml"
ENV_PREFIX = "TABLESYNC_"
SECRET_KEYS = ("password", "service_key")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SystemConfig(_Section):
    """``[system]``: who this machine is and where its SQLite file lives.

    Args:
        id: the system id; rows whose scope column equals it are pulled to this machine.
        database: path of the SQLite file (relative paths are relative to sync.toml).
    """

    id: str = Field(min_length=1, max_length=200)
    database: str = "tablesync.db"


class SupabaseConfig(_Section):
    """``[supabase]``: the remote. Absent means local-only mode.

    Args:
        url: project URL, e.g. ``https://xyz.supabase.co`` or the devserver's URL.
        anon_key: the project's anon (publishable) key.
        email: the system's user for email/password sign-in.
        password: from ``TABLESYNC_SUPABASE__PASSWORD`` only, never from the file.
        service_key: from ``TABLESYNC_SUPABASE__SERVICE_KEY`` only; used by ``provision``.
    """

    url: str
    anon_key: str
    email: str = ""
    password: SecretStr | None = None
    service_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class SyncSettings(_Section):
    """``[sync]``: engine timing and batching.

    Args:
        interval: seconds between push cycles when nothing else triggers one.
        batch_size: records per push request (batches go back to back while a backlog exists).
        max_retries: tries with backoff (1, 2, 4, 8 s...) before going offline.
        realtime: subscribe over Realtime; false means polling only.
        realtime_transport: ``broadcast`` (Broadcast from Database: one private channel per
            system, and no echo of this system's own pushes) or ``postgres_changes`` (one
            channel per table; every pushed row comes back to its pusher). docs/realtime.md.
        poll_interval: seconds between catch-up pulls when Realtime is off or down.
        debounce: seconds to wait after a local change before pushing.
        keep_synced: seconds a pushed sync_queue entry is kept (for inspection) before the
            engine prunes it; the newest entry is always kept.
        probe_interval: seconds between reachability probes while the backend does not
            answer at all (sync resumes within about this long after it is back); 0 = no
            probes (plain backoff).
        max_clock_skew: seconds a version's wall-clock part may be ahead of this machine's
            clock; a pulled row beyond it is refused (recorded in ``_tablesync_refused``,
            retried later), never adopted. The server's own bound is baked into
            ``supabase.sql`` (300 s, see docs/conflicts.md); keep the two equal.
    """

    interval: float = Field(default=10.0, gt=0, le=86400)
    batch_size: int = Field(default=100, ge=1, le=1000)
    max_retries: int = Field(default=5, ge=1, le=100)
    realtime: bool = True
    realtime_transport: Literal["broadcast", "postgres_changes"] = "broadcast"
    poll_interval: float = Field(default=30.0, gt=0, le=86400)
    debounce: float = Field(default=0.05, ge=0, le=60)
    keep_synced: float = Field(default=86400.0, ge=0, le=365 * 86400)
    probe_interval: float = Field(default=2.0, ge=0, le=3600)
    max_clock_skew: float = Field(default=300.0, ge=1, le=86400)


class PathsConfig(_Section):
    """``[paths]``: where tablesync keeps its own files.

    Args:
        schemas: folder of the ``*.sql`` table shapes (relative to sync.toml).
        token_store: encrypted token file (0600).
        conflict_log: JSON-lines conflict log.
    """

    schemas: str = "schemas"
    token_store: str = "~/.ccm/auth.json"
    conflict_log: str = "~/.ccm/logs/conflicts.log"


class StatusConfig(_Section):
    """``[status]``: the web status page and metrics; off unless ``port`` is set.

    Args:
        port: TCP port on 127.0.0.1 (0 picks a free one).
        host: interface to bind; loopback unless you mean it.
        allowed_hosts: extra names the page may be reached by (the ``Host`` header),
            besides localhost, 127.0.0.1 and the bound address (and the machine's name
            when bound to 0.0.0.0); e.g. the LAN address you open it with.
    """

    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "127.0.0.1"
    allowed_hosts: list[str] = Field(default_factory=list)


class TableConfig(_Section):
    """``[tables.<name>]``: one synced table.

    Args:
        schema: the ``.sql`` file in ``schemas/`` holding its CREATE TABLE.
        primary_key: the primary-key column (defaults to the one declared in the SQL).
        scope: the column compared with the system id (pull filter, Realtime filter, RLS).
        priority: lower pushes first among tables with no foreign-key order between them.
        on_delete_conflict: ``edit-wins`` (default) or ``last-write-wins``.
    """

    schema_: str = Field(alias="schema")
    primary_key: str | None = None
    scope: str = "system_id"
    priority: int = 0
    on_delete_conflict: DeletePolicy = DeletePolicy.EDIT_WINS

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SyncConfig(BaseSettings):
    """The whole ``sync.toml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid",
        case_sensitive=False,
    )

    system: SystemConfig
    supabase: SupabaseConfig | None = None
    sync: SyncSettings = SyncSettings()
    paths: PathsConfig = PathsConfig()
    status: StatusConfig = StatusConfig()
    tables: dict[str, TableConfig] = Field(default_factory=dict)
    # Where the file was read from (set by load_config, not a sync.toml key).
    source: str = Field(default=DEFAULT_CONFIG, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent

    def resolve_path(self, value: str) -> Path:
        """A path from the config: ``~`` expanded, relative to sync.toml's folder."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_path(self) -> Path:
        return self.resolve_path(self.system.database)

    @property
    def schemas_dir(self) -> Path:
        return self.resolve_path(self.paths.schemas)



@dataclass(frozen=True)
class Project:
    """Config plus table specs ordered parents-before-children (then priority, name).

    Built by :func:`tablesync.project.load_project`, which reads and parses the schema
    files (layer 4). The type lives here, next to the config it joins, so the store and
    migrations (layer 3) can take a project without importing the loader.
    """

    config: SyncConfig
    tables: tuple[TableSpec, ...]
    ddl: dict[str, str]  # table name -> normalised CREATE TABLE text

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

def _location(source: str, loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "tables":
        section = f"[tables.{parts[1]}]"
        key = ".".join(parts[2:])
    elif parts:
        section = f"[{parts[0]}]" if len(parts) > 1 else ""
        key = ".".join(parts[1:]) if len(parts) > 1 else parts[0]
    else:
        section, key = "", ""
    key = key.replace("schema_", "schema")
    return " ".join(x for x in (source + ":", section, key) if x).rstrip(":")


def _check_no_file_secrets(source: str, data: dict[str, Any]) -> None:
    supa = data.get("supabase")
    if isinstance(supa, dict):
        for key in SECRET_KEYS:
            if key in supa:
                env = f"{ENV_PREFIX}SUPABASE__{key.upper()}"
                raise ConfigError(
                    "secrets are not read from the file", location=f"{source}: [supabase] {key}",
                    hint=f"remove it and set {env} in the environment",
                )


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG) -> SyncConfig:
    """Read ``sync.toml`` (plus ``TABLESYNC_*`` overrides) into a :class:`SyncConfig`."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file not found", location=source,
                          hint="pass --config or create sync.toml") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", location=source) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", location=source) from exc
    _check_no_file_secrets(source, data)
    try:
        return SyncConfig(**data, source=source)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif err.get("type") == "missing":
            msg = "required key is missing"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(msg + more, location=_location(source, loc)) from exc


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``sync.toml`` for editors (written to ``schemas/sync.schema.json``)."""
    schema = SyncConfig.model_json_schema(by_alias=True)
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tablesync sync.toml"
    return schema
