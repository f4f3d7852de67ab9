"""tablesync's own server tables, shared by every synced table: the conflict log, the exit
log (records that left a scope) and the replica claims (one replica per system id), with
the constants the per-table SQL of :mod:`tablesync.sql.postgres` uses too."""

from __future__ import annotations

from tablesync.model import EXITS_TABLE

__all__ = ["CLAIM", "CONFLICTS_TABLE_SQL", "EXITS_TABLE_SQL", "REPLICAS_SQL", "ROLES", "SEQ"]

SEQ = "public.tablesync_change_seq"
ROLES = "authenticated, service_role"
# The JWT's system id, as an uncorrelated scalar subquery: PostgreSQL evaluates it once per
# statement (an InitPlan) instead of parsing the claims JSON for every row a policy checks
# (Supabase's RLS performance advice). 1000-row apply: ~17.5 -> ~14 ms (docs/benchmarks.md).
CLAIM = "(SELECT auth.jwt() -> 'app_metadata' ->> 'system_id')"


# Server-side conflict log: every overwrite of a version the writer had not seen (the
# rule of lww.is_concurrent), whichever path wrote it. Rows are written by the per-table
# trigger function (SECURITY DEFINER); systems read their own scope's rows.
CONFLICTS_TABLE_SQL = f"""CREATE TABLE IF NOT EXISTS public.tablesync_conflicts (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  record_id text NOT NULL,
  scope text,
  winner jsonb NOT NULL,
  loser jsonb NOT NULL,
  reason text NOT NULL,
  resolved_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.tablesync_conflicts ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.tablesync_conflicts FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.tablesync_conflicts TO authenticated;
GRANT ALL ON public.tablesync_conflicts TO service_role;
DROP POLICY IF EXISTS tablesync_select ON public.tablesync_conflicts;
CREATE POLICY tablesync_select ON public.tablesync_conflicts FOR SELECT TO authenticated
  USING (scope = {CLAIM});"""


# One running replica per system id (two SQLite files stamping versions with the same
# origin would break the total order's tie-break and the own-write rule). An engine
# claims its system id with its replica id (a random id kept in its SQLite file) and
# renews the claim while it runs; a claim by another replica is refused while the
# holder's lease is fresh. A replica that stopped cleanly releases it at once.
REPLICAS_SQL = f"""CREATE TABLE IF NOT EXISTS public.tablesync_replicas (
  system_id text PRIMARY KEY,
  replica_id text NOT NULL,
  seen_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.tablesync_replicas ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.tablesync_replicas FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE ON public.tablesync_replicas TO authenticated;
GRANT ALL ON public.tablesync_replicas TO service_role;
DROP POLICY IF EXISTS tablesync_own ON public.tablesync_replicas;
CREATE POLICY tablesync_own ON public.tablesync_replicas FOR ALL TO authenticated
  USING (system_id = {CLAIM}) WITH CHECK (system_id = {CLAIM});

CREATE OR REPLACE FUNCTION public.tablesync_claim(replica text, lease_seconds integer)
RETURNS jsonb LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, public
AS $tablesync$
DECLARE
  me text := {CLAIM};
  holder public.tablesync_replicas;
  renewed boolean;
BEGIN
  IF me IS NULL OR replica IS NULL OR replica = '' THEN
    RAISE EXCEPTION 'tablesync_claim: no system id in the token, or no replica id'
      USING ERRCODE = '22023';
  END IF;
  SELECT * INTO holder FROM public.tablesync_replicas WHERE system_id = me;
  renewed := FOUND AND holder.replica_id = replica
             AND holder.seen_at >= now() - make_interval(secs => greatest(lease_seconds, 1));
  INSERT INTO public.tablesync_replicas AS r (system_id, replica_id, seen_at)
  VALUES (me, replica, now())
  ON CONFLICT (system_id) DO UPDATE SET replica_id = EXCLUDED.replica_id, seen_at = now()
    WHERE r.replica_id = EXCLUDED.replica_id
       OR r.seen_at < now() - make_interval(secs => greatest(lease_seconds, 1));
  IF FOUND THEN
    RETURN jsonb_build_object('claimed', true, 'fresh', NOT renewed);
  END IF;
  SELECT * INTO holder FROM public.tablesync_replicas WHERE system_id = me;
  RETURN jsonb_build_object('claimed', false, 'holder', holder.replica_id,
    'seen_seconds_ago', round(extract(epoch FROM now() - holder.seen_at))::bigint);
END
$tablesync$;
REVOKE EXECUTE ON FUNCTION public.tablesync_claim(text, integer) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.tablesync_claim(text, integer) TO {ROLES};

CREATE OR REPLACE FUNCTION public.tablesync_release(replica text) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, public AS $tablesync$
  UPDATE public.tablesync_replicas SET seen_at = '-infinity'
   WHERE system_id = {CLAIM} AND replica_id = replica;
$tablesync$;
REVOKE EXECUTE ON FUNCTION public.tablesync_release(text) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.tablesync_release(text) TO {ROLES};"""


# Records that left a system's scope (their scope column was changed on the server, e.g.
# a task reassigned from system-a to system-b on the dashboard). RLS hides the moved row
# from the old system, so neither its pulls nor its Realtime channel can see the move;
# this log can: one row per move, readable by the scope the record left, in the same
# change sequence and xid watermark as the tables (catch-up pages it like a table, and it
# is in the Realtime publication). Written only by the per-table exit trigger.
EXITS_TABLE_SQL = f"""CREATE TABLE IF NOT EXISTS public.{EXITS_TABLE} (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  record_id text NOT NULL,
  scope text NOT NULL,
  _ts_hlc bigint NOT NULL,
  _ts_origin text NOT NULL,
  _ts_seq bigint NOT NULL DEFAULT nextval('{SEQ}'),
  _ts_xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
  moved_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tablesync_exits_scope_seq ON public.{EXITS_TABLE} (scope, _ts_seq);
CREATE INDEX IF NOT EXISTS tablesync_exits_scope_xid_seq
  ON public.{EXITS_TABLE} (scope, _ts_xid, _ts_seq);
ALTER TABLE public.{EXITS_TABLE} ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.{EXITS_TABLE} FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.{EXITS_TABLE} TO authenticated;
GRANT ALL ON public.{EXITS_TABLE} TO service_role;
DROP POLICY IF EXISTS tablesync_select ON public.{EXITS_TABLE};
CREATE POLICY tablesync_select ON public.{EXITS_TABLE} FOR SELECT TO authenticated
  USING (scope = {CLAIM});
DO $tablesync$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'supabase_realtime'
                 AND schemaname = 'public' AND tablename = '{EXITS_TABLE}') THEN
    ALTER PUBLICATION supabase_realtime ADD TABLE public.{EXITS_TABLE};
  END IF;
END
$tablesync$;"""
