"""``tablesync generate``: config -> artefacts (text only; no database connections).

:func:`generate` writes them (what the command does, without migrating a local database);
:func:`artifacts`, :func:`stale` and :func:`write` are its steps (``--check`` uses
:func:`stale`). ``tablesync.generate`` is the function; reach the module's other names
with ``from tablesync.generate import artifacts``.

Artefacts: ``sqlite.sql`` and ``supabase.sql`` (per docs/generate.md), ``realtime.json``
(one subscription per table) in the output folder, and ``schemas/sync.schema.json``
(the JSON Schema of sync.toml) next to the schemas.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tablesync.config import json_schema
from tablesync.errors import GenerateError
from tablesync.project import Project
from tablesync.remote.base import filter_value
from tablesync.sql import postgres, sqlite

SCHEMA_FILE = "sync.schema.json"


@dataclass(frozen=True)
class Artifact:
    """One generated file: where it goes and its full text."""

    path: Path
    text: str


def realtime_subscriptions(project: Project) -> list[dict[str, str]]:
    """One postgres_changes subscription per table, filtered on scope = this system."""
    value = filter_value(project.config.system.id)
    return [{"event": "*", "schema": "public", "table": t.name,
             "filter": f"{t.scope}=eq.{value}"} for t in project.tables]


def _json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def artifacts(project: Project, out_dir: Path) -> list[Artifact]:
    """Everything ``generate`` writes, as text."""
    tables, ddl = project.tables, project.ddl
    return [
        Artifact(out_dir / "sqlite.sql", sqlite.schema_sql(tables, ddl)),
        Artifact(out_dir / "supabase.sql", postgres.schema_sql(tables, ddl)),
        Artifact(out_dir / "realtime.json", _json(realtime_subscriptions(project))),
        Artifact(project.config.schemas_dir / SCHEMA_FILE, _json(json_schema())),
    ]


def stale(arts: list[Artifact]) -> list[Path]:
    """Artefacts whose file is missing or differs from the generated text."""
    out = []
    for a in arts:
        try:
            current = a.path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != a.text:
            out.append(a.path)
    return out


def write(arts: list[Artifact]) -> list[Path]:
    """Write the stale artefacts (atomically); return what changed."""
    changed = stale(arts)
    for a in arts:
        if a.path not in changed:
            continue
        try:
            a.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = a.path.with_name(a.path.name + ".tmp")
            tmp.write_text(a.text, encoding="utf-8")
            tmp.replace(a.path)
        except OSError as exc:
            raise GenerateError(f"cannot write {a.path}: {exc.strerror or exc}") from exc
    return changed


def generate(project: Project, out_dir: str | os.PathLike[str] = "generated") -> list[Path]:
    """Write ``project``'s generated files into ``out_dir`` (plus ``schemas/sync.schema.json``
    next to its schemas); return the paths that changed."""
    return write(artifacts(project, Path(out_dir)))
