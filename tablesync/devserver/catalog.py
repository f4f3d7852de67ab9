"""The schema cache: tables, columns, keys and functions of the exposed schema.

Loaded from pg_catalog as the server's own (super)user and reloaded when a request names
something unknown, so tables created after start-up are found without a restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "public"

_TABLES = """
SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY c.relname, a.attnum
"""

_UNIQUES = """
SELECT c.relname, i.indisprimary,
       array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE n.nspname = %s AND i.indisunique AND i.indpred IS NULL
GROUP BY c.relname, i.indexrelid, i.indisprimary
"""

_FUNCTIONS = """
SELECT p.proname, coalesce(p.proargnames, '{}'), p.proargmodes::text[],
       p.pronargs, format_type(p.prorettype, NULL), p.proretset,
       t.typtype, p.provolatile,
       array(SELECT format_type(x, NULL) FROM unnest(p.proargtypes) x)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type t ON t.oid = p.prorettype
WHERE n.nspname = %s AND p.prokind = 'f'
"""


@dataclass
class Table:
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # name -> type
    defaults: set[str] = field(default_factory=set)
    primary_key: tuple[str, ...] = ()
    uniques: list[tuple[str, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[str, ...]       # input argument names, in order ('' if unnamed)
    arg_types: tuple[str, ...]
    returns: str
    returns_set: bool
    returns_composite: bool
    volatile: bool

    @property
    def returns_void(self) -> bool:
        return self.returns == "void" and not self.returns_set


@dataclass
class Catalog:
    """A snapshot of the exposed schema; :meth:`reload` refreshes it."""

    tables: dict[str, Table] = field(default_factory=dict)
    functions: dict[str, list[Function]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def reload(self, conn: Any) -> None:
        """Re-read the catalog through the async connection ``conn``."""
        async with self._lock:
            tables = await _load_tables(conn)
            functions = await _load_functions(conn)
            self.tables, self.functions = tables, functions


async def _load_tables(conn: Any) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for rel, col, _num, typ, has_default in await (await conn.execute(_TABLES, (SCHEMA,))).fetchall():
        table = tables.setdefault(rel, Table(rel))
        table.columns[col] = typ
        if has_default:
            table.defaults.add(col)
    for rel, primary, cols in await (await conn.execute(_UNIQUES, (SCHEMA,))).fetchall():
        if rel not in tables:
            continue
        tables[rel].uniques.append(tuple(cols))
        if primary:
            tables[rel].primary_key = tuple(cols)
    return tables


async def _load_functions(conn: Any) -> dict[str, list[Function]]:
    out: dict[str, list[Function]] = {}
    rows = await (await conn.execute(_FUNCTIONS, (SCHEMA,))).fetchall()
    for name, argnames, modes, nargs, ret, retset, typtype, volatility, argtypes in rows:
        inputs = [n for i, n in enumerate(argnames) if not modes or modes[i] in ("i", "b", "v")]
        inputs = (inputs + [""] * nargs)[:nargs]
        out.setdefault(name, []).append(Function(
            name=name, args=tuple(inputs), arg_types=tuple(argtypes), returns=ret,
            returns_set=bool(retset), returns_composite=typtype == "c",
            volatile=volatility == "v"))
    return out
