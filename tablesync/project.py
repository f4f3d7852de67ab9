"""A project: ``sync.toml`` joined with the parsed ``schemas/*.sql``, in push order."""

from __future__ import annotations

import os
from pathlib import Path

from tablesync.config import DEFAULT_CONFIG, SyncConfig, load_config
from tablesync.config import Project as Project  # defined with the config (layer 2)
from tablesync.errors import ConfigError
from tablesync.model import TableSpec
from tablesync.sql.parse import ParsedTable, check_identifier, parse_schema


def load_project(config_path: str | os.PathLike[str] = DEFAULT_CONFIG) -> Project:
    """Load and validate ``sync.toml`` and every schema file it names."""
    cfg = load_config(config_path)
    return project_from_config(cfg)


def project_from_config(cfg: SyncConfig) -> Project:
    """Join a loaded config with its schema files (raises ConfigError naming file/table/key)."""
    specs: dict[str, TableSpec] = {}
    ddl: dict[str, str] = {}
    for name, tc in cfg.tables.items():
        where = f"{cfg.source}: [tables.{name}]"
        check_identifier(name, "table", where)
        parsed = _read_schema(cfg, name, tc.schema_, where)
        specs[name] = _spec(cfg, name, parsed, where)
        ddl[name] = parsed.ddl
    for spec in specs.values():
        _check_fks(cfg, spec, specs)
    return Project(cfg, _push_order(specs), ddl)


def _read_schema(cfg: SyncConfig, name: str, file: str, where: str) -> ParsedTable:
    path = cfg.schemas_dir / file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"schema file not found: {path}", location=f"{where} schema",
                          hint=f"create it or fix paths.schemas ({cfg.paths.schemas})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read schema file {path}: {exc}",
                          location=f"{where} schema") from exc
    parsed = parse_schema(text, str(path))
    if parsed.name != name:
        raise ConfigError(f"{path.name} creates table {parsed.name!r}, not {name!r}",
                          location=f"{where} schema", hint="the table name must match")
    return parsed


def _spec(cfg: SyncConfig, name: str, parsed: ParsedTable, where: str) -> TableSpec:
    tc = cfg.tables[name]
    if not parsed.primary_key:
        raise ConfigError(f"table {name!r} has no primary key", location=f"{where} schema",
                          hint="declare one column PRIMARY KEY in the CREATE TABLE")
    if len(parsed.primary_key) > 1:
        raise ConfigError(f"table {name!r} has a composite primary key "
                          f"({', '.join(parsed.primary_key)}); tablesync needs one column",
                          location=f"{where} schema",
                          hint="add a single-column id and make the others UNIQUE")
    pk = parsed.primary_key[0]
    if tc.primary_key is not None and tc.primary_key != pk:
        raise ConfigError(f"primary_key {tc.primary_key!r} differs from the SQL's {pk!r}",
                          location=f"{where} primary_key")
    cols = {c.name for c in parsed.columns}
    if tc.scope not in cols:
        raise ConfigError(f"scope column {tc.scope!r} is not a column of table {name!r}",
                          location=f"{where} scope",
                          hint=f"columns: {', '.join(sorted(cols))}")
    return TableSpec(name=name, columns=parsed.columns, primary_key=pk, scope=tc.scope,
                     priority=tc.priority, on_delete_conflict=tc.on_delete_conflict,
                     foreign_keys=parsed.foreign_keys, schema_file=str(Path(tc.schema_)))


def _check_fks(cfg: SyncConfig, spec: TableSpec, specs: dict[str, TableSpec]) -> None:
    where = f"{cfg.source}: [tables.{spec.name}] schema"
    for fk in spec.foreign_keys:
        target = specs.get(fk.ref_table)
        if target is None:
            raise ConfigError(f"table {spec.name!r} references {fk.ref_table!r}, which is "
                              "not a synced table", location=where,
                              hint=f"add [tables.{fk.ref_table}] or drop the REFERENCES")
        missing = [c for c in fk.ref_columns if c not in target.column_names]
        if missing:
            raise ConfigError(f"table {spec.name!r} references unknown column(s) "
                              f"{fk.ref_table}.{', '.join(missing)}", location=where)


def _push_order(specs: dict[str, TableSpec]) -> tuple[TableSpec, ...]:
    """Topological order (parents first), ties by (priority, name); cycles are refused."""
    done: list[TableSpec] = []
    left = dict(specs)
    while left:
        ready = [s for s in left.values()
                 if all(fk.ref_table == s.name or fk.ref_table not in left
                        for fk in s.foreign_keys)]
        if not ready:
            cycle = ", ".join(sorted(left))
            raise ConfigError(f"foreign keys form a cycle between tables: {cycle}",
                              hint="tablesync pushes parents before children; break the cycle")
        nxt = min(ready, key=lambda s: (s.priority, s.name))
        done.append(nxt)
        del left[nxt.name]
    return tuple(done)
