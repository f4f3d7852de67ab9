"""Change capture in PostgreSQL for the Realtime service (psycopg 3 async).

Installs ``realtime.sql`` (trigger function, large-change table, check functions), finds the
tables of publication ``supabase_realtime``, installs the capture trigger on them, and runs the
per-change / per-join checks. Every identifier reaches SQL through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

PUBLICATION = "supabase_realtime"
CHANNEL = "tablesync_realtime"
BROADCAST_CHANNEL = "tablesync_broadcast"  # committed realtime.messages inserts
TRIGGER = "tablesync_realtime"
_LOCK_KEY = 0x7461626C  # advisory lock serialising installs from several services


@dataclass(frozen=True)
class TableInfo:
    """What the service needs to know about one published table."""

    oid: int
    schema: str
    name: str
    rls: bool
    pk: tuple[str, ...]
    identity: tuple[str, ...]  # replica identity columns (what old_record may carry)
    columns: tuple[tuple[str, str], ...]  # (name, pg_type.typname) in attnum order


def realtime_sql() -> str:
    """The SQL installed by :func:`install`."""
    return importlib.resources.files("tablesync.devserver").joinpath("realtime.sql").read_text()


async def set_subscribed(conn: psycopg.AsyncConnection[Any], oids: set[int]) -> None:
    """Capture exactly the tables in ``oids`` (those with a live subscription)."""
    wanted = sorted(oids)
    async with conn.transaction():
        await conn.execute("DELETE FROM realtime.tablesync_subscribed "
                           "WHERE NOT (relid = ANY(%s::oid[]))", (wanted,))
        await conn.execute("INSERT INTO realtime.tablesync_subscribed (relid) "
                           "SELECT unnest(%s::oid[]) ON CONFLICT DO NOTHING", (wanted,))


async def install(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create/replace the realtime schema objects (idempotent, serialised by a lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(realtime_sql().encode())


_TABLES_SQL = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relrowsecurity, c.relreplident,
  coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
  coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = c.oid AND i.indisreplident), '{}'),
  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT array_agg(t.typname::text ORDER BY a.attnum) FROM pg_attribute a
     JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
WHERE p.pubname = %s
"""


def _table_info(row: tuple[Any, ...]) -> TableInfo:
    oid, schema, name, rls, replident, pk, ident_index, names, types = row
    if replident == "f":
        identity = tuple(names)
    elif replident == "i":
        identity = tuple(ident_index)
    elif replident == "d":
        identity = tuple(pk)
    else:
        identity = ()
    return TableInfo(int(oid), schema, name, bool(rls), tuple(pk), identity,
                     tuple(zip(names or (), types or ())))


async def published_tables(conn: psycopg.AsyncConnection[Any]) -> dict[int, TableInfo]:
    """The tables of publication ``supabase_realtime``, by oid."""
    cur = await conn.execute(_TABLES_SQL, (PUBLICATION,))
    return {info.oid: info for info in map(_table_info, await cur.fetchall())}


async def sync_triggers(conn: psycopg.AsyncConnection[Any], tables: dict[int, TableInfo]) -> None:
    """Install the capture trigger on ``tables``; remove it from tables no longer published."""
    cur = await conn.execute(
        "SELECT tgrelid::bigint, n.nspname, c.relname FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.tgname = %s", (TRIGGER,))
    present = {int(oid): (schema, name) for oid, schema, name in await cur.fetchall()}
    await conn.execute("SET lock_timeout = '5s'")
    for oid, info in tables.items():
        if oid not in present:
            await conn.execute(sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}.{}"
                " FOR EACH ROW EXECUTE FUNCTION realtime.tablesync_capture()").format(
                sql.Identifier(TRIGGER), sql.Identifier(info.schema), sql.Identifier(info.name)))
    for oid, (schema, name) in present.items():
        if oid not in tables:
            await conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}.{}").format(
                sql.Identifier(TRIGGER), sql.Identifier(schema), sql.Identifier(name)))


async def selectable_columns(conn: psycopg.AsyncConnection[Any], oid: int,
                             role: str) -> frozenset[str]:
    """Columns of table ``oid`` that ``role`` may SELECT."""
    cur = await conn.execute(
        "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = %s::oid AND a.attnum > 0"
        " AND NOT a.attisdropped AND has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')",
        (oid, role))
    return frozenset(r[0] for r in await cur.fetchall())


async def check_subscription(conn: psycopg.AsyncConnection[Any], oid: int,
                             claims: dict[str, Any], filters: list[list[Any]]) -> None:
    """Raise ``psycopg.Error`` where Supabase's subscription insert would fail."""
    await conn.execute("SELECT realtime.tablesync_check_subscription(%s::oid::regclass,"
                       " %s::jsonb, %s::jsonb)", (oid, json.dumps(claims), json.dumps(filters)))


@functools.lru_cache(maxsize=1024)
def rls_statement(info: TableInfo) -> str | None:
    """The row-by-primary-key SELECT the RLS check runs as a subscriber ($1 = the record)."""
    if not info.pk:
        return None
    table = sql.SQL("{}.{}").format(sql.Identifier(info.schema), sql.Identifier(info.name))
    keys = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in info.pk)
    vals = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in info.pk)
    stmt = sql.SQL("select exists(select 1 from {table} t where ({keys}) = (select {vals}"
                   " from jsonb_populate_record(null::{table}, $1) r))").format(
        table=table, keys=keys, vals=vals)
    return stmt.as_string()


async def visible(conn: psycopg.AsyncConnection[Any], oid: int, rec: dict[str, Any],
                  rls_stmt: str | None, subs: list[dict[str, Any]]) -> list[bool]:
    """For each subscriber (claims + filters): does it see this change?

    Runs without per-subscriber error trapping first (fast); if anything raised (say, a
    policy failing for one subscriber's claims), repeats with trapping, where an error means
    "not visible" for that subscriber only.
    """
    query = ("SELECT realtime.tablesync_visible(%s::oid::regclass, %s::jsonb, %s, %s::jsonb,"
             " %s)")
    params = [oid, json.dumps(rec), rls_stmt, json.dumps(subs), False]
    try:
        cur = await conn.execute(query, params)
    except psycopg.Error:
        if conn.broken or conn.closed:
            raise
        params[-1] = True
        cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return [bool(v) for v in (row[0] if row and row[0] is not None else [])]


async def stored_change(conn: psycopg.AsyncConnection[Any], change_id: int) -> str | None:
    """The JSON of a change too large for NOTIFY."""
    cur = await conn.execute("SELECT payload FROM realtime.tablesync_changes WHERE id = %s",
                             (change_id,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def prune(conn: psycopg.AsyncConnection[Any], older_than_s: float) -> None:
    """Forget stored large changes older than ``older_than_s`` seconds."""
    await conn.execute("DELETE FROM realtime.tablesync_changes"
                       " WHERE created_at < now() - make_interval(secs => %s)", (older_than_s,))


def describe_error(exc: psycopg.Error) -> str:
    """Render like Postgrex: ``ERROR P0001 (raise_exception) <message>``."""
    state = exc.sqlstate or "XX000"
    name = "".join("_" + c.lower() if c.isupper() else c
                   for c in type(exc).__name__).lstrip("_")
    message = exc.diag.message_primary or str(exc)
    return f"ERROR {state} ({name}) {message}"


async def stored_message(conn: psycopg.AsyncConnection[Any], message_id: str) -> str | None:
    """The notification JSON of a broadcast message too large for NOTIFY (by its uuid)."""
    cur = await conn.execute(
        "SELECT json_build_object('id', id, 'topic', topic, 'event', event, 'private',"
        " coalesce(private, false), 'payload', payload)::text FROM realtime.messages"
        " WHERE id = %s::uuid", (message_id,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def prune_messages(conn: psycopg.AsyncConnection[Any], older_than_s: float) -> None:
    """Forget broadcast messages older than ``older_than_s`` seconds (hosted drops old
    partitions after a few days; delivery never reads old messages)."""
    await conn.execute("DELETE FROM realtime.messages WHERE inserted_at < (now() AT TIME ZONE"
                       " 'utc') - make_interval(secs => %s)", (older_than_s,))


async def read_authorizations(conn: psycopg.AsyncConnection[Any], topic: str,
                              claims: dict[str, Any], extensions: tuple[str, ...]
                              ) -> dict[str, bool]:
    """May this user read ``extensions`` (broadcast, presence) of private ``topic``?

    Realtime Authorization as Supabase runs it: in one transaction, insert a probe message
    per extension, switch to the user's role with ``realtime.topic`` and the JWT claims set,
    select the probes back (RLS on ``realtime.messages`` decides which are visible), roll
    back. Raises ``psycopg.Error`` when a policy fails (Supabase: ``RlsPolicyError``).
    """
    probes = {ext: str(uuid.uuid4()) for ext in extensions}
    role = str(claims.get("role", "anon"))
    async with conn.transaction(force_rollback=True):
        for ext, probe in probes.items():
            await conn.execute("INSERT INTO realtime.messages (id, topic, extension)"
                               " VALUES (%s::uuid, %s, %s)", (probe, topic, ext))
        await conn.execute(
            "SELECT set_config('role', %s, true), set_config('realtime.topic', %s, true),"
            " set_config('request.jwt.claims', %s, true),"
            " set_config('request.jwt.claim.sub', %s, true),"
            " set_config('request.jwt.claim.role', %s, true),"
            " set_config('request.headers', '{}', true)",
            (role, topic, json.dumps(claims), str(claims.get("sub", "")), role))
        cur = await conn.execute("SELECT id::text FROM realtime.messages WHERE id = ANY(%s::uuid[])",
                                 (list(probes.values()),))
        seen = {r[0] for r in await cur.fetchall()}
    return {ext: probe in seen for ext, probe in probes.items()}
