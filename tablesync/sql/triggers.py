"""Per-table Postgres triggers besides the stamp: the exit log writer (a record's scope
changed), the soft delete (a plain DELETE becomes a tombstone) and the server-side conflict
log writer. Split from :mod:`tablesync.sql.postgres`, which assembles them."""

from __future__ import annotations

from tablesync.model import EXITS_TABLE, TableSpec
from tablesync.sql.base import ident, lit, qualified

__all__ = ["conflict_trigger_sql", "exit_trigger_sql", "soft_delete_trigger_sql"]

D = "postgres"


def _t(spec: TableSpec) -> str:
    return qualified("public", spec.name, D)


def exit_trigger_sql(spec: TableSpec) -> str:
    """AFTER UPDATE OF scope: record in ``tablesync_exits`` that the row left its old scope
    (with the row's new version, so a replica can tell the move from a later return)."""
    fn = qualified("public", f"tablesync_exit_{spec.name}", D)
    trg = ident("tablesync_exit", D)
    scope, pk = ident(spec.scope, D), ident(spec.primary_key, D)
    return f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $tablesync$
BEGIN
  INSERT INTO public.{EXITS_TABLE} (table_name, record_id, scope, _ts_hlc, _ts_origin)
  VALUES ({lit(spec.name, D)}, OLD.{pk}::text, OLD.{scope}::text, NEW._ts_hlc, NEW._ts_origin);
  RETURN NULL;
END
$tablesync$;
REVOKE EXECUTE ON FUNCTION {fn}() FROM PUBLIC;
DROP TRIGGER IF EXISTS {trg} ON {_t(spec)};
CREATE TRIGGER {trg} AFTER UPDATE OF {scope} ON {_t(spec)} FOR EACH ROW
  WHEN (OLD.{scope} IS NOT NULL AND OLD.{scope} IS DISTINCT FROM NEW.{scope})
  EXECUTE FUNCTION {fn}();"""


def soft_delete_trigger_sql(spec: TableSpec) -> str:
    """BEFORE DELETE: a plain DELETE (dashboard, REST) becomes a tombstone, so it syncs.

    The row stays with ``_ts_deleted = true`` (the UPDATE goes through the stamp trigger:
    a server version whose base is the version deleted) and the DELETE itself is skipped.
    Deleting a row that is already a tombstone, or any row with the setting
    ``tablesync.hard_delete = 'on'``, removes it for real (tombstone clean-up)."""
    fn = qualified("public", f"tablesync_soft_delete_{spec.name}", D)
    trg = ident("tablesync_soft_delete", D)
    pk = ident(spec.primary_key, D)
    return f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql AS $tablesync$
BEGIN
  IF OLD._ts_deleted OR coalesce(current_setting('tablesync.hard_delete', true), '') = 'on'
  THEN
    RETURN OLD;
  END IF;
  UPDATE {_t(spec)} SET _ts_deleted = true WHERE {pk} = OLD.{pk};
  RETURN NULL;
END
$tablesync$;
DROP TRIGGER IF EXISTS {trg} ON {_t(spec)};
CREATE TRIGGER {trg} BEFORE DELETE ON {_t(spec)}
  FOR EACH ROW EXECUTE FUNCTION {fn}();"""


def conflict_trigger_sql(spec: TableSpec) -> str:
    """AFTER UPDATE: log an overwritten version its writer had not seen (lww.is_concurrent).

    ``NEW`` is the winner, ``OLD`` the loser: logged when their versions differ and the
    winner's base is below the loser's version (``COLLATE "C"``: code-point order, as in
    Python). Dashboard writes never qualify (the stamp trigger gives them the old version
    as base), so in practice this records pushes that beat a concurrent stored write."""
    fn = qualified("public", f"tablesync_conflict_{spec.name}", D)
    trg = ident("tablesync_conflict", D)
    scope = ident(spec.scope, D)
    pk = ident(spec.primary_key, D)
    return f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $tablesync$
BEGIN
  INSERT INTO public.tablesync_conflicts (table_name, record_id, scope, winner, loser, reason)
  VALUES ({lit(spec.name, D)}, OLD.{pk}::text, OLD.{scope}::text, to_jsonb(NEW), to_jsonb(OLD),
          'concurrent write overwritten on the server');
  RETURN NULL;
END
$tablesync$;
REVOKE EXECUTE ON FUNCTION {fn}() FROM PUBLIC;
DROP TRIGGER IF EXISTS {trg} ON {_t(spec)};
CREATE TRIGGER {trg} AFTER UPDATE ON {_t(spec)} FOR EACH ROW
  WHEN ((NEW._ts_hlc, NEW._ts_origin COLLATE "C") IS DISTINCT FROM
        (OLD._ts_hlc, OLD._ts_origin COLLATE "C")
        AND (NEW._ts_base_hlc, NEW._ts_base_origin COLLATE "C")
            < (OLD._ts_hlc, OLD._ts_origin COLLATE "C"))
  EXECUTE FUNCTION {fn}();"""
