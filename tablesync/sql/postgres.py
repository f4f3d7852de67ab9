"""Postgres/Supabase DDL per the shared contract (docs/generate.md): idempotent, re-runnable.

Per synced table: the table with its ``_ts_*`` columns (``ADD COLUMN IF NOT EXISTS`` for
migrations, a guard refusing type changes and dropped columns), indexes, a BEFORE trigger
stamping ``_ts_seq``/``_ts_xid`` and a server version, RLS with policies on the scope
column, publication membership, the batch apply function ``tablesync_apply_<table>``
(the conflict rule of :mod:`tablesync.lww` as one SQL row comparison) and grants.
"""

from __future__ import annotations

from tablesync.model import EXITS_TABLE, DeletePolicy, TableSpec
from tablesync.sql.base import (create_table_sql, default_sql, ident, legacy_pg_type, lit,
                                pg_type, qualified, type_sql)

from tablesync.sql.broadcast import BROADCAST_SQL, broadcast_trigger_sql
from tablesync.sql.triggers import (conflict_trigger_sql, exit_trigger_sql,
                                    soft_delete_trigger_sql)
from tablesync.sql.server_tables import (CLAIM, CONFLICTS_TABLE_SQL, EXITS_TABLE_SQL,
                                         REPLICAS_SQL, ROLES, SEQ)

D = "postgres"
TS_COLUMNS = (
    ("_ts_hlc", "BIGINT NOT NULL DEFAULT 0"),
    ("_ts_origin", "TEXT NOT NULL DEFAULT ''"),
    ("_ts_deleted", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("_ts_base_hlc", "BIGINT NOT NULL DEFAULT 0"),
    ("_ts_base_origin", "TEXT NOT NULL DEFAULT ''"),
    ("_ts_seq", "BIGINT"),
    ("_ts_xid", "BIGINT"),
)
VERSION_COLUMNS = ("_ts_hlc", "_ts_origin", "_ts_deleted", "_ts_base_hlc", "_ts_base_origin")
NOW_HLC = "((extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16)"
# the server's bound on pushed versions (docs/conflicts.md "Bounded versions"): baked in,
# not an RPC parameter (a pusher must not choose its own bound); an operator may change it
# with ALTER DATABASE ... SET tablesync.max_clock_skew_ms = <ms>
MAX_CLOCK_SKEW_MS = 300_000
SKEW_MS_SQL = (f"coalesce(nullif(current_setting('tablesync.max_clock_skew_ms', true), '')"
               f"::bigint, {MAX_CLOCK_SKEW_MS})")


def apply_function_name(table: str) -> str:
    return f"tablesync_apply_{table}"


def _t(spec: TableSpec) -> str:
    return qualified("public", spec.name, D)


def sort_key_sql(row: str, policy: DeletePolicy) -> str:
    """lww.sort_key as a SQL row value of record variable ``row`` (text compared as C)."""
    if policy is DeletePolicy.EDIT_WINS:
        pos_hlc = f"CASE WHEN {row}._ts_deleted THEN {row}._ts_base_hlc ELSE {row}._ts_hlc END"
        pos_org = (f"(CASE WHEN {row}._ts_deleted THEN {row}._ts_base_origin "
                   f"ELSE {row}._ts_origin END)")
    else:
        pos_hlc, pos_org = f"{row}._ts_hlc", f"{row}._ts_origin"
    return (f'ROW({pos_hlc}, {pos_org} COLLATE "C", {row}._ts_deleted::int, '
            f'{row}._ts_hlc, {row}._ts_origin COLLATE "C")')


def preamble_sql() -> str:
    """Objects shared by every table: the change sequence and the watermark function."""
    return f"""CREATE SEQUENCE IF NOT EXISTS {SEQ};
GRANT USAGE, SELECT ON SEQUENCE {SEQ} TO {ROLES};

CREATE OR REPLACE FUNCTION public.tablesync_watermark() RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER AS $$
  SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint
$$;
REVOKE EXECUTE ON FUNCTION public.tablesync_watermark() FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.tablesync_watermark() TO {ROLES};

{CONFLICTS_TABLE_SQL}

{EXITS_TABLE_SQL}

{REPLICAS_SQL}

{BROADCAST_SQL}
{broadcast_trigger_sql(EXITS_TABLE, "scope", "id")}"""


def table_sql(spec: TableSpec, ddl: str) -> str:
    """CREATE TABLE IF NOT EXISTS + ADD COLUMN IF NOT EXISTS for every column + guard."""
    extra = ", ".join(f"{n} {t}" for n, t in TS_COLUMNS)
    parts = [create_table_sql(ddl, D, schema="public", extra_columns=extra) + ";"]
    parts += [add_column_sql(spec, col.name) for col in spec.columns
              if col.name != spec.primary_key]
    return "\n".join(parts + [_ts_columns_and_guard_sql(spec)])


def add_column_sql(spec: TableSpec, column: str) -> str:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` for one declared column."""
    col = spec.column(column)
    clause = f"{ident(col.name, D)} {type_sql(col, D)}"
    default = default_sql(col, D)
    clause += f" DEFAULT {default}" if default is not None else ""
    clause += "" if col.nullable else " NOT NULL"
    return f"ALTER TABLE {_t(spec)} ADD COLUMN IF NOT EXISTS {clause};"


def _ts_columns_and_guard_sql(spec: TableSpec) -> str:
    parts = [f"ALTER TABLE {_t(spec)} ADD COLUMN IF NOT EXISTS {name} {decl};"
             for name, decl in TS_COLUMNS]
    return "\n".join(parts + [_guard_sql(spec)])


def _guard_sql(spec: TableSpec) -> str:
    """A DO block refusing (with a clear error) a changed type or a dropped column.

    A column of the type earlier versions generated (``integer`` for INTEGER, ``real``
    for REAL, ``varchar``/``character`` for VARCHAR/CHAR, ``json`` for JSON) is widened
    to the type of docs/types.md first."""
    rel = f"{lit(_t(spec), D)}::regclass"
    declared = ", ".join(lit(c, D) for c in spec.column_names)
    checks = []
    for c in spec.columns:
        att = f"(SELECT atttypid FROM pg_attribute WHERE attrelid = {rel} AND attname = " \
              f"{lit(c.name, D)} AND NOT attisdropped)"
        new, old = type_sql(c, D), legacy_pg_type(c.type)
        widen = ""
        if old.upper() != new.upper():
            widen = (f"  IF {att} = to_regtype({lit(old, D)}) THEN\n"
                     f"    ALTER TABLE {_t(spec)} ALTER COLUMN {ident(c.name, D)} TYPE {new} "
                     f"USING {ident(c.name, D)}::{new};\n  END IF;\n")
        where = f"{spec.name}.{c.name}"
        checks.append(
            f"{widen}  IF {att} IS DISTINCT FROM to_regtype({lit(new, D)}) THEN\n"
            f"    RAISE EXCEPTION 'tablesync: public.% has type % in the database but % in %; "
            f"type changes are not migrated', {lit(where, D)}, (SELECT format_type(atttypid, "
            f"atttypmod) FROM pg_attribute WHERE attrelid = {rel} AND attname = "
            f"{lit(c.name, D)}), {lit(new, D)}, {lit(spec.schema_file, D)};\n  END IF;")
    body = "\n".join(checks)
    return f"""DO $tablesync$
DECLARE extra text;
BEGIN
{body}
  SELECT string_agg(attname, ', ') INTO extra FROM pg_attribute
   WHERE attrelid = {rel} AND attnum > 0
     AND NOT attisdropped AND attname NOT LIKE '\\_ts\\_%' AND attname NOT IN ({declared});
  IF extra IS NOT NULL THEN
    RAISE EXCEPTION 'tablesync: public.% has column(s) % not declared in %; dropping columns is not migrated', {lit(spec.name, D)}, extra, {lit(spec.schema_file, D)};
  END IF;
END
$tablesync$;"""


def indexes_sql(spec: TableSpec) -> str:
    """The catch-up page query's indexes (``scope = s AND _ts_xid >= c AND _ts_seq > a
    ORDER BY _ts_seq LIMIT 1000``): (scope, _ts_seq) reads a full catch-up in order, one
    page at a time; (scope, _ts_xid, _ts_seq) finds an incremental one's few rows. Neither
    is deduplicated, so a planner with stale statistics (a table bulk-loaded before
    autoanalyze) does not prefer the xid index and sort the whole scope for every page.
    They replace the earlier (_ts_seq) and (scope, _ts_xid) indexes (dropped here)."""
    scope = ident(spec.scope, D)
    seq_ix = ident(f"tablesync_{spec.name}_scope_seq", D)
    xid_ix = ident(f"tablesync_{spec.name}_scope_xid_seq", D)
    old = ", ".join(qualified("public", f"tablesync_{spec.name}_{s}", D)
                    for s in ("seq", "scope_xid"))
    return (f"CREATE INDEX IF NOT EXISTS {seq_ix} ON {_t(spec)} ({scope}, _ts_seq);\n"
            f"CREATE INDEX IF NOT EXISTS {xid_ix} ON {_t(spec)} ({scope}, _ts_xid, _ts_seq);\n"
            f"DROP INDEX IF EXISTS {old};")


def stamp_trigger_sql(spec: TableSpec) -> str:
    """BEFORE INSERT OR UPDATE: sequence, xid, and a server version when none was brought.

    An UPDATE is re-stamped (a server version above the one it replaces, whose base is
    the replaced version) unless it brings a version of its own that sorts above the
    stored one: a dashboard edit or delete keeps the stored version columns, so it is
    re-stamped whatever the table's policy (a delete at the same version would sort
    above the live row under last-write-wins, yet be older than a concurrent offline
    edit stamped after the row's last version)."""
    fn = qualified("public", f"tablesync_stamp_{spec.name}", D)
    trg = ident("tablesync_stamp", D)
    new_key = sort_key_sql("NEW", spec.on_delete_conflict)
    old_key = sort_key_sql("OLD", spec.on_delete_conflict)
    return f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql AS $tablesync$
BEGIN
  NEW._ts_seq := nextval('{SEQ}');
  NEW._ts_xid := pg_current_xact_id()::text::bigint;
  NEW._ts_hlc := coalesce(NEW._ts_hlc, 0);
  NEW._ts_origin := coalesce(NEW._ts_origin, '');
  NEW._ts_deleted := coalesce(NEW._ts_deleted, false);
  NEW._ts_base_hlc := coalesce(NEW._ts_base_hlc, 0);
  NEW._ts_base_origin := coalesce(NEW._ts_base_origin, '');
  IF TG_OP = 'INSERT' THEN
    IF NEW._ts_hlc = 0 THEN
      NEW._ts_hlc := {NOW_HLC};
      NEW._ts_origin := 'server';
      NEW._ts_base_hlc := 0;
      NEW._ts_base_origin := '';
    END IF;
  ELSIF {new_key} <= {old_key}
        OR (NEW._ts_hlc = OLD._ts_hlc AND NEW._ts_origin = OLD._ts_origin) THEN
    NEW._ts_base_hlc := OLD._ts_hlc;
    NEW._ts_base_origin := OLD._ts_origin;
    NEW._ts_hlc := greatest({NOW_HLC}, least(OLD._ts_hlc, 9223372036854775806) + 1);
    NEW._ts_origin := 'server';
  END IF;
  RETURN NEW;
END
$tablesync$;
DROP TRIGGER IF EXISTS {trg} ON {_t(spec)};
CREATE TRIGGER {trg} BEFORE INSERT OR UPDATE ON {_t(spec)}
  FOR EACH ROW EXECUTE FUNCTION {fn}();"""


def rls_sql(spec: TableSpec) -> str:
    """RLS on, one policy per command tying the scope column to the JWT's system id."""
    t, scope = _t(spec), ident(spec.scope, D)
    cond = f"{scope} = {CLAIM}"
    policies = (("tablesync_select", "SELECT", f"USING ({cond})"),
                ("tablesync_insert", "INSERT", f"WITH CHECK ({cond})"),
                ("tablesync_update", "UPDATE", f"USING ({cond}) WITH CHECK ({cond})"),
                ("tablesync_delete", "DELETE", f"USING ({cond})"))
    parts = [f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"]
    for name, cmd, clause in policies:
        parts.append(f"DROP POLICY IF EXISTS {ident(name, D)} ON {t};")
        parts.append(f"CREATE POLICY {ident(name, D)} ON {t} FOR {cmd} TO authenticated "
                     f"{clause};")
    return "\n".join(parts)


def publication_sql(spec: TableSpec) -> str:
    return f"""DO $tablesync$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'supabase_realtime'
                 AND schemaname = 'public' AND tablename = {lit(spec.name, D)}) THEN
    ALTER PUBLICATION supabase_realtime ADD TABLE {_t(spec)};
  END IF;
END
$tablesync$;"""


# Postgres types that normalise what they are given (a timestamp drops an offset, a boolean
# reads 'yes', a uuid lower-cases, jsonb reorders keys...): after an applied push the apply
# function returns the stored values of such columns when they differ from those sent, and
# the pushing replica adopts them (docs/types.md, "Canonical values").
CANONICAL_TYPES = ("BOOLEAN", "DATE", "TIMESTAMP", "TIMESTAMPTZ", "TIME", "JSONB", "UUID",
                   "BYTEA", "DECIMAL", "NUMERIC")


def canonical_columns(spec: TableSpec) -> tuple[str, ...]:
    """The columns (primary key aside) whose stored value may differ from the sent one."""
    return tuple(c.name for c in spec.columns if c.name != spec.primary_key
                 and pg_type(c.type).upper().split("(")[0].strip() in CANONICAL_TYPES)


def json_columns(spec: TableSpec) -> tuple[str, ...]:
    return tuple(c.name for c in spec.columns if pg_type(c.type).upper() == "JSONB")


def _canon_case(spec: TableSpec, rec: str, sent: str) -> str:
    """SQL: the stored values of the canonical columns of record ``rec`` as a JSON object
    when one differs from the row ``sent`` (jsonb), else NULL. A JSON column compares as
    text (the replica holds the text), any other by its JSON form."""
    cols = canonical_columns(spec)
    if not cols:
        return "NULL::jsonb"
    jsons = set(json_columns(spec))
    tests, pairs = [], []
    for c in cols:
        key, col = lit(c, D), f"{rec}.{ident(c, D)}"
        if c in jsons:
            tests.append(f"{col}::text IS DISTINCT FROM {sent} ->> {key}")
        else:
            tests.append(f"coalesce(to_jsonb({col}), 'null') IS DISTINCT FROM "
                         f"coalesce({sent} -> {key}, 'null')")
        pairs.append(f"{key}, {col}")
    objs = [f"jsonb_build_object({', '.join(pairs[i:i + 50])})"
            for i in range(0, len(pairs), 50)]
    return f"CASE WHEN {' OR '.join(tests)} THEN {' || '.join(objs)} END"


def _json_text_sql(spec: TableSpec, row: str) -> str | None:
    """SQL: the row object ``row`` with JSON columns sent as text (a replica holds JSON as
    text) parsed into their JSON value (a text that is not JSON raises 22P02); None when
    the table has no JSON column."""
    cols = json_columns(spec)
    if not cols:
        return None
    names = "ARRAY[" + ", ".join(lit(c, D) for c in cols) + "]"
    return (f"(SELECT jsonb_object_agg(kv.k, CASE WHEN kv.k = ANY ({names}) AND "
            f"jsonb_typeof(kv.v) = 'string' THEN (kv.v #>> '{{}}')::jsonb ELSE kv.v END) "
            f"FROM jsonb_each({row}) AS kv(k, v))")


def apply_function_sql(spec: TableSpec) -> str:
    """``tablesync_apply_<table>(rows jsonb) returns jsonb``: the LWW rule per row."""
    t, pk = _t(spec), ident(spec.primary_key, D)
    fn = qualified("public", apply_function_name(spec.name), D)
    cols = spec.column_names + VERSION_COLUMNS
    set_cols = ", ".join(ident(c, D) for c in cols)
    set_vals = ", ".join(f"inc.{ident(c, D)}" for c in cols)
    inc_key = sort_key_sql("inc", spec.on_delete_conflict)
    cur_key = sort_key_sql("cur", spec.on_delete_conflict)
    pk_key = lit(spec.primary_key, D)
    fast = _fast_path_sql(spec)
    fix = _json_text_sql(spec, "r")
    json_fix = f"\n      sent := r;\n      r := {fix};" if fix else ""
    sent = "sent" if fix else "r"          # the row as sent (JSON columns as text)
    canon_inc, canon_cur = _canon_case(spec, "inc", sent), _canon_case(spec, "cur", sent)
    defaults = "".join(
        f"\n        IF NOT (r ? {lit(c.name, D)}) THEN inc.{ident(c.name, D)} := {default_sql(c, D)};"
        f" END IF;" for c in spec.columns if c.default is not None)
    return f"""CREATE OR REPLACE FUNCTION {fn}(rows jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, public AS $tablesync$
DECLARE
  r jsonb;
  inc {t};
  cur {t};
  have_cur boolean;
  rid text;
  n integer;
  res jsonb;
  result jsonb := '[]'::jsonb;
  n_rows integer;
  n_ids integer;
  complete boolean;
  applied_ids text[];
  me text := {CLAIM};
  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  skew_ms bigint := {SKEW_MS_SQL};
  unbounded boolean;
  frows jsonb;
  sent jsonb;
BEGIN
  IF rows IS NULL OR jsonb_typeof(rows) <> 'array' THEN
    RAISE EXCEPTION 'tablesync: rows must be a JSON array' USING ERRCODE = '22023';
  END IF;
  -- bounded versions: a version too far ahead of this clock, or of another origin than
  -- the pusher (the JWT's system id) or 'server', is refused row by row below
  SELECT coalesce(bool_or(
           (jsonb_typeof(x.v -> '_ts_hlc') = 'number'
            AND ((x.v ->> '_ts_hlc')::numeric < 0 OR (x.v ->> '_ts_hlc')::numeric
                 >= (now_ms + skew_ms + 1)::numeric * 65536))
           OR (me IS NOT NULL AND coalesce(x.v ->> '_ts_hlc', '0') <> '0'
               AND coalesce(x.v ->> '_ts_origin', '') NOT IN (me, 'server'))), false)
    INTO unbounded FROM jsonb_array_elements(rows) AS x(v) WHERE jsonb_typeof(x.v) = 'object';
{fast}
  FOR r IN SELECT value FROM jsonb_array_elements(rows) LOOP
    res := NULL;
    rid := CASE WHEN jsonb_typeof(r) = 'object' THEN r ->> {pk_key} END;
    BEGIN
      IF rid IS NULL THEN
        RAISE EXCEPTION 'row is not an object with a non-null %', {pk_key}
          USING ERRCODE = '22023';
      END IF;
      IF unbounded AND jsonb_typeof(r -> '_ts_hlc') = 'number'
         AND ((r ->> '_ts_hlc')::numeric < 0
              OR (r ->> '_ts_hlc')::numeric >= (now_ms + skew_ms + 1)::numeric * 65536) THEN
        RAISE EXCEPTION 'tablesync: clock skew: version % is % ms ahead of the server clock '
          '(max_clock_skew % ms); server_hlc=%', r ->> '_ts_hlc',
          floor((r ->> '_ts_hlc')::numeric / 65536) - now_ms, skew_ms, now_ms << 16
          USING ERRCODE = '22008';
      END IF;
      IF unbounded AND me IS NOT NULL AND coalesce(r ->> '_ts_hlc', '0') <> '0'
         AND coalesce(r ->> '_ts_origin', '') NOT IN (me, 'server') THEN
        RAISE EXCEPTION 'tablesync: origin % is neither this system (%) nor server',
          r ->> '_ts_origin', me USING ERRCODE = '42501';
      END IF;{json_fix}
      inc := jsonb_populate_record(NULL::{t}, r);
      SELECT * INTO cur FROM {t} WHERE {pk} = inc.{pk} FOR UPDATE;
      have_cur := FOUND;
      IF NOT have_cur THEN{defaults}
        inc._ts_hlc := coalesce((r ->> '_ts_hlc')::bigint, 0);
        inc._ts_origin := coalesce(r ->> '_ts_origin', '');
        inc._ts_deleted := coalesce((r ->> '_ts_deleted')::boolean, false);
        inc._ts_base_hlc := coalesce((r ->> '_ts_base_hlc')::bigint, 0);
        inc._ts_base_origin := coalesce(r ->> '_ts_base_origin', '');
        INSERT INTO {t} ({set_cols}) VALUES ({set_vals}) ON CONFLICT ({pk}) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 1 THEN
          res := jsonb_build_object('id', rid, 'outcome', 'applied', 'row', {canon_inc},
                                    'message', NULL);
        ELSE
          SELECT * INTO cur FROM {t} WHERE {pk} = inc.{pk} FOR UPDATE;
          have_cur := FOUND;
          IF NOT have_cur THEN
            res := jsonb_build_object('id', rid, 'outcome', 'forbidden', 'row', NULL,
              'message', 'the record exists but is not visible to this system');
          END IF;
        END IF;
      END IF;
      IF res IS NULL THEN
        inc := jsonb_populate_record(cur, r);
        inc._ts_hlc := coalesce((r ->> '_ts_hlc')::bigint, 0);
        inc._ts_origin := coalesce(r ->> '_ts_origin', '');
        inc._ts_deleted := coalesce((r ->> '_ts_deleted')::boolean, false);
        inc._ts_base_hlc := coalesce((r ->> '_ts_base_hlc')::bigint, 0);
        inc._ts_base_origin := coalesce(r ->> '_ts_base_origin', '');
        IF {inc_key} > {cur_key} THEN
          UPDATE {t} SET ({set_cols}) = ROW({set_vals}) WHERE {pk} = cur.{pk};
          GET DIAGNOSTICS n = ROW_COUNT;
          IF n = 1 THEN
            res := jsonb_build_object('id', rid, 'outcome', 'applied', 'row', {canon_inc},
                                      'message', NULL);
          ELSE
            res := jsonb_build_object('id', rid, 'outcome', 'forbidden', 'row', NULL,
              'message', 'the record is not writable by this system');
          END IF;
        ELSIF inc._ts_hlc = cur._ts_hlc AND inc._ts_origin = cur._ts_origin THEN
          res := jsonb_build_object('id', rid, 'outcome', 'duplicate', 'row', {canon_cur},
                                    'message', NULL);
        ELSE
          res := jsonb_build_object('id', rid, 'outcome', 'superseded', 'row', to_jsonb(cur),
                                    'message', NULL);
        END IF;
      END IF;
    EXCEPTION
      WHEN insufficient_privilege THEN
        res := jsonb_build_object('id', rid, 'outcome', 'forbidden', 'row', NULL,
                                  'message', SQLERRM);
      WHEN OTHERS THEN
        res := jsonb_build_object('id', rid, 'outcome', 'error', 'row', NULL,
                                  'message', SQLSTATE || ': ' || SQLERRM);
    END;
    result := result || jsonb_build_array(res);
  END LOOP;
  RETURN result;
END
$tablesync$;"""


def _fast_path_sql(spec: TableSpec) -> str:
    """The set-based common path of the apply function (plpgsql statements).

    Taken when every row is an object carrying every declared column and the five version
    keys, with distinct primary keys: one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE
    incoming key > stored key``, then the outcomes from a second statement (a fresh
    snapshot: rows not updated are locked by the upsert, so it reads what the per-row path
    would read). Any error (RLS, FK, bad value, a row not visible) rolls the block back and
    the per-row path below decides row by row, so outcomes are identical.
    """
    t, pk = _t(spec), ident(spec.primary_key, D)
    cols = spec.column_names + VERSION_COLUMNS
    names = ", ".join(ident(c, D) for c in cols)
    user_vals = [f"p.{ident(c, D)}" for c in spec.column_names]
    ts_vals = ["coalesce((e.j ->> '_ts_hlc')::bigint, 0)",
               "coalesce(e.j ->> '_ts_origin', '')",
               "coalesce((e.j ->> '_ts_deleted')::boolean, false)",
               "coalesce((e.j ->> '_ts_base_hlc')::bigint, 0)",
               "coalesce(e.j ->> '_ts_base_origin', '')"]
    # the upsert reads every element once through jsonb_populate_recordset (the version
    # columns are columns of the record type too): ~10% less time than one
    # jsonb_populate_record per element plus ->> extraction of the version keys (a user
    # column named "ordinality" would make p.ordinality ambiguous: the block then falls
    # back to the per-row path, still correct)
    rec_ts_vals = ["coalesce(p._ts_hlc, 0)", "coalesce(p._ts_origin, '')",
                   "coalesce(p._ts_deleted, false)", "coalesce(p._ts_base_hlc, 0)",
                   "coalesce(p._ts_base_origin, '')"]
    vals = ", ".join(user_vals + ts_vals)
    excluded = ", ".join(f"EXCLUDED.{ident(c, D)}" for c in cols)
    keys = "ARRAY[" + ", ".join(lit(c, D) for c in cols) + "]"
    pk_key = lit(spec.primary_key, D)
    inc_key = sort_key_sql("EXCLUDED", spec.on_delete_conflict)
    cur_key = sort_key_sql("tgt", spec.on_delete_conflict)
    src_key = sort_key_sql("s", spec.on_delete_conflict)
    fix = _json_text_sql(spec, "x.v")
    # the rows as sent (o.j: JSON columns as text), next to the rows read (e.j)
    sent, orig = (("o.j", ", jsonb_array_elements(rows) WITH ORDINALITY AS o(j, o_ord)")
                  if fix else ("e.j", ""))
    same = " WHERE o.o_ord = e.ord" if fix else ""
    src = (f"SELECT e.ord, e.j ->> {pk_key} AS row_id, {vals}, {sent} "
           f"FROM jsonb_array_elements(frows) WITH ORDINALITY AS e(j, ord){orig}, "
           f"LATERAL jsonb_populate_record(NULL::{t}, e.j) AS p{same}")
    src_cols = ", ".join(["ord", "row_id"] + [ident(c, D) for c in cols] + ["_ts_j"])
    frows = ("(SELECT jsonb_agg(" + fix + " ORDER BY x.o) FROM jsonb_array_elements(rows) "
             "WITH ORDINALITY AS x(v, o))") if fix else "rows"
    canon_p = _canon_case(spec, "p", sent)
    if canon_p == "NULL::jsonb":
        all_applied = ("FROM jsonb_array_elements(frows) WITH ORDINALITY AS e(j, ord)")
    else:   # the stored values are the sent ones read into the table's types
        all_applied = (f"FROM jsonb_array_elements(frows) WITH ORDINALITY AS e(j, ord){orig}, "
                       f"LATERAL jsonb_populate_record(NULL::{t}, e.j) AS p{same}")
    return f"""  SELECT count(*), count(DISTINCT x.v ->> {pk_key}),
         bool_and(jsonb_typeof(x.v) = 'object' AND x.v ->> {pk_key} IS NOT NULL AND x.v ?& {keys})
    INTO n_rows, n_ids, complete FROM jsonb_array_elements(rows) AS x(v);
  IF complete AND n_rows = n_ids AND NOT unbounded THEN
    BEGIN
      frows := {frows};
      WITH up AS (
        INSERT INTO {t} AS tgt ({names})
        SELECT {", ".join(user_vals + rec_ts_vals)}
          FROM jsonb_populate_recordset(NULL::{t}, frows) WITH ORDINALITY AS p
         ORDER BY p.ordinality
        ON CONFLICT ({pk}) DO UPDATE SET ({names}) = ROW({excluded})
          WHERE {inc_key} > {cur_key}
        RETURNING tgt.{pk}::text AS up_id)
      SELECT coalesce(array_agg(up.up_id), ARRAY[]::text[]) INTO applied_ids FROM up;
      IF cardinality(applied_ids) = n_rows THEN    -- all applied: no second read
        SELECT jsonb_agg(jsonb_build_object('id', e.j ->> {pk_key}, 'outcome', 'applied',
                                            'row', {canon_p}, 'message', NULL) ORDER BY e.ord)
          INTO result {all_applied};
        RETURN result;
      END IF;
      WITH s ({src_cols}) AS ({src})
      SELECT jsonb_agg(CASE
               WHEN a.up_id IS NOT NULL THEN jsonb_build_object('id', s.row_id,
                 'outcome', 'applied', 'row', {_canon_case(spec, "s", "s._ts_j")},
                 'message', NULL)
               WHEN tgt.{pk} IS NULL OR {src_key} > {cur_key} THEN NULL
               WHEN s._ts_hlc = tgt._ts_hlc AND s._ts_origin = tgt._ts_origin THEN
                 jsonb_build_object('id', s.row_id, 'outcome', 'duplicate',
                                    'row', {_canon_case(spec, "tgt", "s._ts_j")}, 'message', NULL)
               ELSE jsonb_build_object('id', s.row_id, 'outcome', 'superseded',
                                       'row', to_jsonb(tgt), 'message', NULL)
             END ORDER BY s.ord)
        INTO result
        FROM s LEFT JOIN unnest(applied_ids) AS a(up_id) ON a.up_id = s.row_id
               LEFT JOIN {t} AS tgt ON tgt.{pk} = s.{pk};
      IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(result) AS o(v)
                     WHERE jsonb_typeof(o.v) = 'null') THEN
        RETURN result;
      END IF;
      RAISE EXCEPTION 'tablesync: set-based apply undecided' USING ERRCODE = 'P0001';
    EXCEPTION WHEN OTHERS THEN                    -- rolled back; decide row by row
      RAISE DEBUG 'tablesync: per-row apply: % %', SQLSTATE, SQLERRM;
      result := '[]'::jsonb;
    END;
  END IF;"""


def grants_sql(spec: TableSpec) -> str:
    t = _t(spec)
    fn = qualified("public", apply_function_name(spec.name), D)
    return (f"REVOKE ALL ON {t} FROM anon;\n"
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {ROLES};\n"
            f"REVOKE EXECUTE ON FUNCTION {fn}(jsonb) FROM PUBLIC, anon;\n"
            f"GRANT EXECUTE ON FUNCTION {fn}(jsonb) TO {ROLES};")


def table_objects_sql(spec: TableSpec, ddl: str) -> str:
    """Everything for one table, in dependency order."""
    return "\n\n".join([f"-- table {spec.name} ({spec.on_delete_conflict.value})",
                        table_sql(spec, ddl), *_dependent_sql(spec)])


def _dependent_sql(spec: TableSpec) -> list[str]:
    return [indexes_sql(spec), stamp_trigger_sql(spec), soft_delete_trigger_sql(spec),
            conflict_trigger_sql(spec), exit_trigger_sql(spec),
            broadcast_trigger_sql(spec.name, spec.scope, spec.primary_key),
            rls_sql(spec), publication_sql(spec), apply_function_sql(spec), grants_sql(spec)]


def table_rebuild_sql(spec: TableSpec, new_columns: tuple[str, ...] = ()) -> str:
    """An existing table brought to ``spec``: ``new_columns`` added, then everything
    built on the column list re-created (the same text :func:`table_objects_sql` emits
    after its CREATE TABLE, so a migration cannot drift from ``supabase.sql``)."""
    head = [add_column_sql(spec, c) for c in new_columns]
    return "\n\n".join(["\n".join(head + [_ts_columns_and_guard_sql(spec)]),
                        *_dependent_sql(spec)])


def schema_sql(tables: tuple[TableSpec, ...], ddl: dict[str, str]) -> str:
    """The whole ``supabase.sql`` (idempotent; run it again to migrate)."""
    parts = ["-- Generated by `tablesync generate`; do not edit. Postgres/Supabase.",
             "-- Idempotent: re-run after adding tables or columns to migrate.",
             preamble_sql()]
    parts += [table_objects_sql(spec, ddl[spec.name]) for spec in tables]
    return "\n\n".join(parts) + "\n"
