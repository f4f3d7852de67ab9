-- Change capture and per-subscriber checks for the devserver's Realtime service.
-- Idempotent; applied by tablesync.devserver.realtime_capture.install().
--
-- Capture: an AFTER ROW trigger (installed by the service on every table of publication
-- supabase_realtime) sends each change as JSON through NOTIFY on channel
-- 'tablesync_realtime'. A change whose JSON does not fit NOTIFY's 8000-byte limit is stored in
-- realtime.tablesync_changes and only its id is notified. Checks: the filter and RLS rules of
-- Supabase's realtime.apply_rls / realtime.subscription_check_filters, evaluated the same way
-- (values cast to the column type in SQL; RLS as the subscriber's role and JWT claims).

CREATE SCHEMA IF NOT EXISTS realtime;

CREATE SEQUENCE IF NOT EXISTS realtime.tablesync_change_id;

-- Tables that have at least one live subscription (kept by the service: written before the
-- "Subscribed to PostgreSQL" system message, reconciled every refresh). Changes to other tables are not captured:
-- nobody would receive them, and building + notifying them cost the writer ~30 us a row.
CREATE TABLE IF NOT EXISTS realtime.tablesync_subscribed (
  relid oid PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS realtime.tablesync_changes (
  id bigint PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  payload text NOT NULL
);

-- The row trigger. SECURITY DEFINER: writers (anon/authenticated) cannot see realtime.*.
-- SET TimeZone: record values are rendered in UTC whatever the writer's session uses.
CREATE OR REPLACE FUNCTION realtime.tablesync_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
  change_id bigint;
  payload text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM realtime.tablesync_subscribed WHERE relid = TG_RELID) THEN
    RETURN NULL;
  END IF;
  change_id := nextval('realtime.tablesync_change_id');
  payload := json_build_object(
    'id', change_id,
    'schema', TG_TABLE_SCHEMA,
    'table', TG_TABLE_NAME,
    'type', TG_OP,
    'commit_timestamp', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'record', CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
    'old', CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END
  )::text;
  IF octet_length(payload) < 7900 THEN
    PERFORM pg_notify('tablesync_realtime', payload);
  ELSE
    INSERT INTO realtime.tablesync_changes (id, payload) VALUES (change_id, payload);
    PERFORM pg_notify('tablesync_realtime', change_id::text);
  END IF;
  RETURN NULL;
END
$$;

-- Supabase's realtime.check_equality_op: both sides cast to the column type, compared in SQL.
CREATE OR REPLACE FUNCTION realtime.tablesync_check_op(
  op text, type_ text, val_1 text, val_2 text, negate boolean
) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
  op_symbol text;
  res boolean;
BEGIN
  IF op = 'isdistinct' THEN
    EXECUTE format('select %L::%s %s %L::%s', val_1, type_,
      CASE WHEN negate THEN 'IS NOT DISTINCT FROM' ELSE 'IS DISTINCT FROM' END, val_2, type_)
      INTO res;
    RETURN res;
  END IF;
  IF op = 'is' THEN
    IF val_2 NOT IN ('null', 'true', 'false', 'unknown') THEN
      RAISE EXCEPTION 'invalid value for is filter: must be null, true, false, or unknown';
    END IF;
    EXECUTE format('select %L::%s %s %s', val_1, type_,
      CASE WHEN negate THEN 'IS NOT' ELSE 'IS' END, upper(val_2)) INTO res;
    RETURN res;
  END IF;
  op_symbol := CASE op
    WHEN 'eq' THEN '=' WHEN 'neq' THEN '!=' WHEN 'lt' THEN '<' WHEN 'lte' THEN '<='
    WHEN 'gt' THEN '>' WHEN 'gte' THEN '>=' WHEN 'in' THEN '= any'
    WHEN 'like' THEN 'LIKE' WHEN 'ilike' THEN 'ILIKE' WHEN 'match' THEN '~'
    WHEN 'imatch' THEN '~*' END;
  IF op_symbol IS NULL THEN
    RAISE EXCEPTION 'unsupported equality operator: %', op;
  END IF;
  EXECUTE format('select %L::%s %s (%L::%s)', val_1, type_, op_symbol, val_2,
    CASE WHEN op = 'in' THEN type_ || '[]' ELSE type_ END) INTO res;
  RETURN CASE WHEN negate THEN NOT res ELSE res END;
END
$$;

-- Supabase's realtime.subscription_check_filters, as a function: raises what it raises.
-- filters: [[column, op, value, negate], ...] as parsed by realtime_filters.parse_params.
CREATE OR REPLACE FUNCTION realtime.tablesync_check_subscription(
  entity regclass, claims jsonb, filters jsonb
) RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
  col_names text[] := coalesce(array_agg(a.attname ORDER BY a.attnum), '{}'::text[])
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = entity AND a.attnum > 0 AND NOT a.attisdropped
      AND pg_catalog.has_column_privilege((claims ->> 'role'), a.attrelid, a.attnum, 'SELECT');
  f jsonb;
  col text;
  op text;
  val text;
  col_type regtype;
  in_val jsonb;
BEGIN
  FOR f IN SELECT * FROM jsonb_array_elements(filters) LOOP
    col := f ->> 0; op := f ->> 1; val := f ->> 2;
    IF NOT col = ANY(col_names) THEN
      RAISE EXCEPTION 'invalid column for filter %', col;
    END IF;
    col_type := (SELECT atttypid::regtype FROM pg_catalog.pg_attribute
                 WHERE attrelid = entity AND attname = col);
    IF col_type IS NULL THEN
      RAISE EXCEPTION 'failed to lookup type for column %', col;
    END IF;
    IF op = 'in' THEN
      EXECUTE format('select to_jsonb(%L::%s)', val, col_type::text || '[]') INTO in_val;
      IF coalesce(jsonb_array_length(in_val), 0) > 100 THEN
        RAISE EXCEPTION 'too many values for `in` filter. Maximum 100';
      END IF;
    ELSIF op = 'is' THEN
      IF val NOT IN ('null', 'true', 'false', 'unknown') THEN
        RAISE EXCEPTION 'invalid value for is filter: must be null, true, false, or unknown';
      END IF;
      IF val <> 'null' AND col_type <> 'boolean'::regtype THEN
        RAISE EXCEPTION 'is % filter requires a boolean column, got %', val, col_type::text;
      END IF;
    ELSIF op IN ('like', 'ilike') THEN
      IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_operator
                     WHERE oprname = '~~' AND oprleft = col_type) THEN
        RAISE EXCEPTION 'operator % requires a text-compatible column type, got %', op, col_type::text;
      END IF;
    ELSIF op IN ('match', 'imatch') THEN
      IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_operator
                     WHERE oprname = CASE WHEN op = 'imatch' THEN '~*' ELSE '~' END
                       AND oprleft = col_type AND oprright = col_type
                       AND oprresult = 'boolean'::regtype) THEN
        RAISE EXCEPTION 'operator % requires a text-compatible column type, got %', op, col_type::text;
      END IF;
      BEGIN
        PERFORM '' ~ val;
      EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'invalid regular expression for % filter: %', op, sqlerrm;
      END;
    ELSE
      EXECUTE format('select to_jsonb(%L::%s)', val, col_type::text);
    END IF;
  END LOOP;
END
$$;

-- Which subscribers see one change (Supabase's apply_rls visibility part).
-- rec: the columns filters are evaluated on (new record; the old identity for DELETE).
-- rls_stmt: NULL, or the statement selecting the row by primary key (built by the service
--   with quoted identifiers; $1 = rec), run as each subscriber's role and claims.
-- subs: [{"claims": {...}, "filters": [[column, op, value, negate], ...]}, ...]
-- safe: catch errors per subscriber (a subtransaction each); the service calls with
--   safe = false first and repeats with safe = true only if that call failed.
DROP FUNCTION IF EXISTS realtime.tablesync_visible(regclass, jsonb, boolean, jsonb);
CREATE OR REPLACE FUNCTION realtime.tablesync_visible(
  entity regclass, rec jsonb, rls_stmt text, subs jsonb, safe boolean
) RETURNS boolean[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  result boolean[] := '{}';
  sub jsonb;
  f jsonb;
  ok boolean;
  col_type text;
BEGIN
  FOR sub IN SELECT * FROM jsonb_array_elements(subs) LOOP
    ok := true;
    FOR f IN SELECT * FROM jsonb_array_elements(sub -> 'filters') LOOP
      IF NOT rec ? (f ->> 0) THEN
        ok := false;
        EXIT;
      END IF;
      col_type := (SELECT atttypid::regtype::text FROM pg_catalog.pg_attribute
                   WHERE attrelid = entity AND attname = f ->> 0);
      BEGIN
        ok := coalesce(realtime.tablesync_check_op(f ->> 1, col_type, rec #>> ARRAY[f ->> 0],
                                                   f ->> 2, (f ->> 3)::boolean), false);
      EXCEPTION WHEN others THEN
        ok := false;
      END;
      EXIT WHEN NOT ok;
    END LOOP;
    IF ok AND rls_stmt IS NOT NULL THEN
      IF safe THEN
        BEGIN
          PERFORM set_config('role', sub -> 'claims' ->> 'role', true),
                  set_config('request.jwt.claims', (sub -> 'claims')::text, true);
          EXECUTE rls_stmt INTO ok USING rec;
          PERFORM set_config('role', NULL, true);
        EXCEPTION WHEN others THEN
          ok := false;
        END;
      ELSE
        PERFORM set_config('role', sub -> 'claims' ->> 'role', true),
                set_config('request.jwt.claims', (sub -> 'claims')::text, true);
        EXECUTE rls_stmt INTO ok USING rec;
        PERFORM set_config('role', NULL, true);
      END IF;
    END IF;
    result := result || coalesce(ok, false);
  END LOOP;
  PERFORM set_config('role', NULL, true);
  RETURN result;
END
$$;

-- Broadcast from Database: hosted Realtime replicates INSERTs into realtime.messages (a
-- logical replication slot on that table) and forwards each to the topic's subscribers. Here
-- an AFTER INSERT trigger notifies channel 'tablesync_broadcast' with the committed message
-- (NOTIFY is transactional: a rolled-back send, or the authorization probe rows Realtime
-- inserts and rolls back, are never delivered). A message whose JSON does not fit NOTIFY is
-- notified by id (uuid text) and read back from realtime.messages by the service.
CREATE OR REPLACE FUNCTION realtime.tablesync_broadcast_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  note text;
BEGIN
  IF NEW.extension <> 'broadcast' THEN
    RETURN NULL;
  END IF;
  note := json_build_object('id', NEW.id, 'topic', NEW.topic, 'event', NEW.event,
                            'private', coalesce(NEW.private, false),
                            'payload', NEW.payload)::text;
  IF octet_length(note) < 7900 THEN
    PERFORM pg_notify('tablesync_broadcast', note);
  ELSE
    PERFORM pg_notify('tablesync_broadcast', NEW.id::text);
  END IF;
  RETURN NULL;
END
$$;

DO $$
BEGIN
  IF to_regclass('realtime.messages') IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM pg_trigger WHERE tgname = 'tablesync_broadcast'
        AND tgrelid = 'realtime.messages'::regclass) THEN
    CREATE TRIGGER tablesync_broadcast AFTER INSERT ON realtime.messages
      FOR EACH ROW EXECUTE FUNCTION realtime.tablesync_broadcast_capture();
  END IF;
END
$$;

-- Only the service (the database owner) uses these; the API roles have USAGE on schema
-- realtime (for realtime.messages and realtime.topic(), as on Supabase) but no rights here.
REVOKE ALL ON FUNCTION realtime.tablesync_capture() FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.tablesync_broadcast_capture() FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.tablesync_check_op(text, text, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.tablesync_check_subscription(regclass, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.tablesync_visible(regclass, jsonb, text, jsonb, boolean)
  FROM PUBLIC;
REVOKE ALL ON TABLE realtime.tablesync_changes FROM PUBLIC;
