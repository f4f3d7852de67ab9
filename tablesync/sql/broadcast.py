"""Realtime Broadcast from Database, generated for Postgres/Supabase (docs/realtime.md).

Each synced table (and the exit log) gets AFTER row triggers that send every change to the
private Realtime topic of the scope it belongs to (:func:`topic_sql`, mirrored by
:func:`tablesync.remote.base.system_topic`), through Supabase's ``realtime.send``, unless the
row's origin is that scope's own system: a system's own pushes are never sent back to it (no
echo). The trigger's ``WHEN`` clause makes that check without calling any function, so a
push costs nothing extra. A change whose payload would exceed the broadcast size limit is
sent as a keys-only hint (``partial: true``): the receiver fetches the row. Who may join a
topic is decided by RLS on ``realtime.messages``: the topic of the JWT's system id only.
"""

from __future__ import annotations

from tablesync.sql.base import ident, lit, qualified
from tablesync.sql.server_tables import CLAIM

__all__ = ["BROADCAST_SQL", "TOPIC_PREFIX", "broadcast_trigger_sql"]

D = "postgres"
TOPIC_PREFIX = "tablesync:"
HASHED_PREFIX = "tablesync#"
# Realtime frames carry the joined topic ("realtime:" + topic) in at most 255 bytes: longer
# system ids get a hashed topic (the two prefixes keep the name spaces apart).
MAX_PLAIN_ID_BYTES = 200
# Hosted Realtime drops a broadcast over the plan's limit (free: 256 KB + 500 bytes):
# a larger change goes out keys-only. ALTER DATABASE ... SET tablesync.broadcast_max_bytes
# raises it on plans with a larger limit.
MAX_BYTES = 250_000

BROADCAST_SQL = f"""CREATE OR REPLACE FUNCTION public.tablesync_topic(system_id text)
RETURNS text LANGUAGE sql IMMUTABLE AS $tablesync$
  SELECT CASE WHEN octet_length(system_id) <= {MAX_PLAIN_ID_BYTES}
              THEN '{TOPIC_PREFIX}' || system_id ELSE '{HASHED_PREFIX}' || md5(system_id) END
$tablesync$;
GRANT EXECUTE ON FUNCTION public.tablesync_topic(text) TO anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION public.tablesync_broadcast() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET "TimeZone" = 'UTC'
AS $tablesync$
DECLARE
  scope_col text := TG_ARGV[0];
  key_col text := TG_ARGV[1];
  rec jsonb;
  keys jsonb;
  payload jsonb;
BEGIN
  rec := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
  keys := jsonb_build_object(key_col, rec -> key_col);
  payload := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
    'operation', TG_OP, 'record', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE rec END,
    'old_record', CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE keys END);
  IF TG_OP <> 'DELETE' AND octet_length(payload::text) > coalesce(nullif(
       current_setting('tablesync.broadcast_max_bytes', true), '')::bigint, {MAX_BYTES}) THEN
    payload := payload || jsonb_build_object('partial', true, 'record',
      keys || jsonb_build_object(scope_col, rec -> scope_col));
  END IF;
  PERFORM realtime.send(payload, TG_OP, public.tablesync_topic(rec ->> scope_col), true);
  RETURN NULL;
END
$tablesync$;
REVOKE EXECUTE ON FUNCTION public.tablesync_broadcast() FROM PUBLIC;

DROP POLICY IF EXISTS tablesync_read ON realtime.messages;
CREATE POLICY tablesync_read ON realtime.messages FOR SELECT TO authenticated
  USING (extension = 'broadcast' AND realtime.topic() = public.tablesync_topic({CLAIM}));"""


def broadcast_trigger_sql(table: str, scope: str, key: str) -> str:
    """The two AFTER row triggers of ``public.<table>`` (INSERT/UPDATE, DELETE) that send a
    change to its scope's topic unless the row's ``_ts_origin`` is that scope (no echo)."""
    t, s = qualified("public", table, D), ident(scope, D)
    args = f"{lit(scope, D)}, {lit(key, D)}"
    upsert, delete = ident("tablesync_broadcast", D), ident("tablesync_broadcast_delete", D)
    return f"""DROP TRIGGER IF EXISTS {upsert} ON {t};
CREATE TRIGGER {upsert} AFTER INSERT OR UPDATE ON {t} FOR EACH ROW
  WHEN (NEW.{s} IS NOT NULL AND NEW._ts_origin IS DISTINCT FROM NEW.{s}::text)
  EXECUTE FUNCTION public.tablesync_broadcast({args});
DROP TRIGGER IF EXISTS {delete} ON {t};
CREATE TRIGGER {delete} AFTER DELETE ON {t} FOR EACH ROW
  WHEN (OLD.{s} IS NOT NULL AND OLD._ts_origin IS DISTINCT FROM OLD.{s}::text)
  EXECUTE FUNCTION public.tablesync_broadcast({args});"""
