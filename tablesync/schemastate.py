"""The schema ``generate`` last turned into a migration, and what changed since (pure).

The state file (``supabase/tablesync-schema.json``, committed with the migrations it
describes) records per synced table its columns (declared type, Postgres type,
nullability, default), primary key, scope column, conflict policy, foreign keys and a
digest of the table's generated server SQL; plus a digest of the shared server objects
and the generator's version. :func:`diff` compares a recorded state with the project's
current one and returns the migration steps, refusing what cannot be migrated safely
(docs/schema-changes.md) with the manual steps spelled out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tablesync.config import Project
from tablesync.errors import GenerateError
from tablesync.model import TableSpec
from tablesync.sql import postgres
from tablesync.sql.base import default_sql, ident, qualified, type_sql

FORMAT = 1
DOCS = "docs/schema-changes.md"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _table_state(spec: TableSpec, ddl: str) -> dict[str, Any]:
    return {
        "schema_file": spec.schema_file,
        "primary_key": spec.primary_key,
        "scope": spec.scope,
        "on_delete_conflict": spec.on_delete_conflict.value,
        "columns": [{"name": c.name, "type": c.type, "pg_type": type_sql(c, "postgres"),
                     "nullable": c.nullable, "default": default_sql(c, "postgres")}
                    for c in spec.columns],
        "foreign_keys": [{"columns": list(fk.columns), "ref_table": fk.ref_table,
                          "ref_columns": list(fk.ref_columns)} for fk in spec.foreign_keys],
        # what a migration re-creates (the CREATE TABLE, hence a foreign key added to an
        # existing table, is not part of it: see Diff.notes)
        "sql": _digest(postgres.table_rebuild_sql(spec)),
    }


def snapshot(project: Project, generator: str) -> dict[str, Any]:
    """The project's schema as the state file records it (JSON-ready)."""
    return {
        "format": FORMAT,
        "note": "written by `tablesync generate`: commit it with supabase/migrations",
        "generator": generator,
        "shared_sql": _digest(postgres.preamble_sql()),
        "tables": {t.name: _table_state(t, project.ddl[t.name]) for t in project.tables},
    }


def dumps(state: dict[str, Any]) -> str:
    """The state file's text (stable: diffs in review show only what changed)."""
    return json.dumps(state, indent=2, ensure_ascii=False) + "\n"


def loads(text: str, where: str) -> dict[str, Any]:
    """Parse a state file, refusing anything but a state this version can read."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenerateError(f"{where}: not a tablesync state file ({exc})",
                            hint="restore it from version control") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise GenerateError(f"{where}: not a tablesync state file (no 'tables' object)",
                            hint="restore it from version control")
    if data.get("format") != FORMAT:
        raise GenerateError(f"{where}: state format {data.get('format')!r} is not "
                            f"{FORMAT}; written by a different tablesync version",
                            hint="use the tablesync version that wrote it")
    return data


@dataclass(frozen=True)
class Step:
    """One migration: ``kind`` is ``init``, ``shared``, ``add_table``, ``add_column`` or
    ``update_table``; ``columns`` are the added columns of an ``add_column``."""

    kind: str
    table: str = ""
    columns: tuple[str, ...] = ()


@dataclass
class Diff:
    """What :func:`diff` found: migration steps, tables no longer synced, refusals, and
    notes on changes no migration carries."""

    steps: list[Step] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def diff(old: dict[str, Any] | None, new: dict[str, Any], project: Project, *,
         accept: bool = False) -> Diff:
    """The steps from ``old`` (None: nothing generated yet) to ``new`` (of ``project``).

    A refused change is listed in ``refused``; with ``accept`` (the user did the manual
    steps) its table gets the steps of the rest: added columns, objects re-created."""
    out = Diff()
    if old is None:
        out.steps.append(Step("init"))
        return out
    if old.get("shared_sql") != new["shared_sql"]:
        out.steps.append(Step("shared"))
    specs = {t.name: t for t in project.tables}
    for name, now in new["tables"].items():
        was = old["tables"].get(name)
        if was is None:
            out.steps.append(Step("add_table", name))
            continue
        refused = _refusals(specs[name], was, now)
        out.refused += refused
        if refused and not accept:
            continue
        if was.get("foreign_keys") != now["foreign_keys"]:
            out.notes.append(f"the foreign keys of {name} changed: the server table keeps "
                             "the ones it has; add or drop constraints with a migration "
                             "of your own (ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY)")
        have = {c["name"] for c in was["columns"]}
        added = tuple(c["name"] for c in now["columns"] if c["name"] not in have)
        if added:
            out.steps.append(Step("add_column", name, added))
        elif was.get("sql") != now["sql"]:
            out.steps.append(Step("update_table", name))
    out.removed = sorted(set(old["tables"]) - set(new["tables"]))
    return out


def refusal_error(refused: list[str], state_path: str) -> GenerateError:
    """One error carrying every refused change and its manual steps."""
    body = "\n".join(refused)
    return GenerateError(
        f"schema change(s) refused: tablesync cannot migrate them without losing data or "
        f"breaking replicas; nothing was written\n{body}\n"
        f"After doing the manual steps, `tablesync generate --accept-manual` records the "
        f"new schema in {state_path} (see {DOCS})")


def _refusals(spec: TableSpec, was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    t, file = spec.name, spec.schema_file
    tq = qualified("public", t, "postgres")
    out = []
    if was["primary_key"] != now["primary_key"]:
        out.append(f"- {t}: primary key changed from {was['primary_key']!r} to "
                   f"{now['primary_key']!r} ({file}). Replicas key every queued change, "
                   "tombstone and cursor by it. Manual steps: create a new table with the "
                   "new key under a new name, copy the rows on the server, point sync.toml "
                   "at it, and re-create each replica's database (docs/operations.md)")
    if was["scope"] != now["scope"]:
        out.append(f"- {t}: scope column changed from {was['scope']!r} to {now['scope']!r} "
                   "(sync.toml). RLS, pulls and Realtime filter on it, and every replica's "
                   "copy was chosen by the old one. Manual steps: migrate the server "
                   f"(fill {now['scope']!r} for every row of {tq}), then reset every "
                   "replica with `tablesync sync reset` so it pulls its rows again")
    old_cols = {c["name"]: c for c in was["columns"]}
    new_cols = {c["name"]: c for c in now["columns"]}
    for name in [c["name"] for c in was["columns"] if c["name"] not in new_cols]:
        c = ident(name, "postgres")
        out.append(f"- {t}.{name}: column dropped from {file}. Replicas still holding it "
                   "keep writing it, and its data would be lost. Manual steps: 1. ship app "
                   f"versions that no longer write {name}; 2. push or drain every "
                   f"replica's queue; 3. server: a migration `ALTER TABLE {tq} DROP "
                   f"COLUMN {c};` (supabase migration new drop_{t}_{name}); 4. each "
                   f"replica: `ALTER TABLE {ident(t, 'sqlite')} DROP COLUMN "
                   f"{ident(name, 'sqlite')};` after dropping its tablesync_{t}_* "
                   "triggers (generate re-creates them)")
    for name, new in new_cols.items():
        old = old_cols.get(name)
        if old is None:
            if not new["nullable"] and new["default"] is None:
                out.append(f"- {t}.{name}: new column is NOT NULL without a DEFAULT "
                           f"({file}); the existing rows have no value for it. Give it a "
                           "DEFAULT or make it nullable (fill it, then add NOT NULL by "
                           "hand later)")
            continue
        if old["pg_type"] != new["pg_type"]:
            out.append(f"- {t}.{name}: type changed from {old['pg_type']} to "
                       f"{new['pg_type']} ({file}). Replicas would push values of the old "
                       "type. Manual steps: add a new column of the new type (a supported "
                       "change), copy the values over on the server and the replicas, "
                       "then drop the old column (the dropped-column steps)")
        elif old["nullable"] != new["nullable"] or old["default"] != new["default"]:
            out.append(f"- {t}.{name}: NOT NULL or DEFAULT changed ({file}). Manual steps: "
                       f"server: `ALTER TABLE {tq} ALTER COLUMN {ident(name, 'postgres')} "
                       "SET/DROP NOT NULL` or `SET/DROP DEFAULT` in a migration of your "
                       "own; SQLite cannot alter a column, so replicas keep the old "
                       "constraint unless their table is rebuilt")
    return out
