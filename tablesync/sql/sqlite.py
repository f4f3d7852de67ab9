"""SQLite DDL: user tables, ``sync_queue``, tablesync's own tables, capture triggers.

Capture design (measured in docs/benchmarks.md, "Capture"): one queue row per changed
row, no JSON for INSERT/UPDATE (``record_data`` stays NULL; the push reads the latest row
image inside the same read transaction as the queue entries, and coalescing pushes the
latest state anyway), the old image as JSON for DELETE (the row is gone afterwards).

Versions: the trigger stamps the wall time of the write, ``created_at = julianday('now')``
(a Julian day number, millisecond precision; one clock read, no text formatting), and
leaves ``hlc = 0``. The store turns those stamps into hybrid-logical-clock versions
(``max(wall_ms << 16, max(observed clock, previous stamp) + 1)``, in queue order) at the
start of every transaction that reads or compares queue versions, before anything can
raise the observed clock (see :mod:`tablesync.stamp`); the result is the HLC a trigger
computing it at write time would have produced, at about half the trigger's cost.
The primary-key-change trigger is ``AFTER UPDATE OF <pk>``, so SQLite only considers it
for statements that assign the key. The echo guard is a flag in ``_tablesync_state``
that the store sets inside its apply transaction, invisible to other connections.

``sync_queue`` has the seed's columns and defaults, without the seed's AUTOINCREMENT
(+0.3-0.4x per captured row: it rewrites ``sqlite_sequence`` on every insert). Ids are
never reused all the same: tablesync never deletes the newest queue row (``reset``
keeps it, marked synced), and SQLite's rowid allocation only reuses an id after the
largest one is deleted. A ``sync_queue`` created earlier with AUTOINCREMENT keeps it and
works the same. Its CHECK is written
``operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE'``, which accepts
exactly what the seed's ``operation IN ('INSERT','UPDATE','DELETE')`` accepts but costs
nothing per row (SQLite builds an ephemeral table for the IN list on every trigger call:
about +0.8x on batched inserts, measured).
"""

from __future__ import annotations

from tablesync.model import ColumnSpec, TableSpec
from tablesync.sql.base import create_table_sql, ident, lit, pg_type

D = "sqlite"
TRIGGER_PREFIX = "tablesync_"
QUEUE_EXTRA_COLUMNS = {"hlc": "INTEGER NOT NULL DEFAULT 0", "last_error": "TEXT DEFAULT NULL"}

SYNC_QUEUE_SQL = """CREATE TABLE IF NOT EXISTS sync_queue (
    id INTEGER PRIMARY KEY,
    operation TEXT CHECK(operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE'),
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    record_data JSON,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    synced_at TIMESTAMP DEFAULT NULL,
    retry_count INTEGER DEFAULT 0,
    hlc INTEGER NOT NULL DEFAULT 0,
    last_error TEXT DEFAULT NULL
);"""

# The seed architecture's own sync_queue, verbatim (what an app built from the seed has; kept
# as it is by the migrations, which only add QUEUE_EXTRA_COLUMNS).
SEED_SYNC_QUEUE_SQL = """CREATE TABLE sync_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation TEXT CHECK(operation IN ('INSERT','UPDATE','DELETE')),
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    record_data JSON,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    synced_at TIMESTAMP DEFAULT NULL,
    retry_count INTEGER DEFAULT 0
);"""

# Versioned migrations of tablesync's own tables: (version, name, statements).
# Each statement is idempotent so sqlite.sql can also be run on an up-to-date database.
OWN_MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "sync_queue and state tables", (
        SYNC_QUEUE_SQL,
        """CREATE TABLE IF NOT EXISTS _tablesync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applying INTEGER NOT NULL DEFAULT 0,
    hlc INTEGER NOT NULL DEFAULT 0,
    last_synced_at TEXT
);""",
        "INSERT OR IGNORE INTO _tablesync_state (id) VALUES (1);",
        """CREATE TABLE IF NOT EXISTS _tablesync_meta (
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    origin TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    base_hlc INTEGER NOT NULL DEFAULT 0,
    base_origin TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (table_name, record_id)
) WITHOUT ROWID;""",
        """CREATE TABLE IF NOT EXISTS _tablesync_conflicts (
    id INTEGER PRIMARY KEY,
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    winner_version TEXT NOT NULL,
    loser_version TEXT NOT NULL,
    winner JSON NOT NULL,
    loser JSON NOT NULL,
    reason TEXT NOT NULL,
    resolved_at TEXT NOT NULL,
    UNIQUE (table_name, record_id, winner_version, loser_version)
);""",
        """CREATE TABLE IF NOT EXISTS _tablesync_cursors (
    table_name TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);""",
        """CREATE TABLE IF NOT EXISTS _tablesync_parked (
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_at TEXT NOT NULL,
    PRIMARY KEY (table_name, record_id)
);""",
    )),
    (2, "queue stamping watermark", (
        """CREATE TABLE IF NOT EXISTS _tablesync_stamp (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stamped_id INTEGER NOT NULL,
    hlc INTEGER NOT NULL
);""",
        # an existing queue was stamped by the earlier triggers: start after its last row
        "INSERT OR IGNORE INTO _tablesync_stamp (id, stamped_id, hlc) SELECT 1, "
        "coalesce(max(id), 0), coalesce((SELECT hlc FROM sync_queue ORDER BY id DESC "
        "LIMIT 1), 0) FROM sync_queue;",
    )),
    (3, "replica id", (
        # this file's identity: two replicas may not sync with one system id (docs/engine.md)
        """CREATE TABLE IF NOT EXISTS _tablesync_replica (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    replica_id TEXT NOT NULL
);""",
        "INSERT OR IGNORE INTO _tablesync_replica (id, replica_id) VALUES "
        "(1, lower(hex(randomblob(16))));",
    )),
    (4, "refused remote rows", (
        # a server row this replica could not apply (local constraint, malformed, version
        # beyond the clock bound, larger than the response cap): kept with the reason and
        # retried by every catch-up while ``row`` holds it (docs/engine.md)
        """CREATE TABLE IF NOT EXISTS _tablesync_refused (
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    seq INTEGER,
    hlc INTEGER,
    reason TEXT NOT NULL,
    row JSON,
    tries INTEGER NOT NULL DEFAULT 1,
    refused_at TEXT NOT NULL,
    PRIMARY KEY (table_name, record_id)
);""",
    )),
    (5, "backfill of rows that predate sync", (
        # per synced table: progress of queueing its pre-existing rows (tablesync.backfill)
        """CREATE TABLE IF NOT EXISTS _tablesync_backfill (
    table_name TEXT PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    last_key,
    first_id INTEGER,
    last_id INTEGER,
    other_scope INTEGER NOT NULL DEFAULT 0,
    other_keys TEXT NOT NULL DEFAULT '[]',
    started_at TEXT NOT NULL,
    finished_at TEXT
);""",
    )),
)

MIGRATIONS_TABLE_SQL = """CREATE TABLE IF NOT EXISTS _tablesync_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);"""

WALL_STAMP = "julianday('now')"
NOT_APPLYING = "(SELECT applying FROM _tablesync_state) = 0"


def own_tables_sql() -> str:
    """tablesync's own tables (all migrations, idempotent) and their version rows."""
    parts = [MIGRATIONS_TABLE_SQL]
    for version, name, statements in OWN_MIGRATIONS:
        parts.extend(statements)
        parts.append(f"INSERT OR IGNORE INTO _tablesync_migrations (version, name) "
                     f"VALUES ({int(version)}, {lit(name, D)});")
    return "\n".join(parts)


def table_sql(ddl: str) -> str:
    """The user's table, transpiled to SQLite, every identifier quoted."""
    return create_table_sql(ddl, D) + ";"


def trigger_names(spec: TableSpec) -> tuple[str, ...]:
    base = TRIGGER_PREFIX + spec.name
    return (f"{base}_insert", f"{base}_update", f"{base}_update_pk", f"{base}_delete")


def _json_image(spec: TableSpec, row: str) -> str:
    """The row as a JSON object (a BLOB column's value as bytea hex text: JSON cannot hold
    a blob, and the wire form of bytea is that text)."""
    def value(c: ColumnSpec) -> str:
        v = f"{row}.{ident(c.name, D)}"
        if pg_type(c.type).upper() == "BYTEA":
            return f"CASE WHEN typeof({v}) = 'blob' THEN '\\x' || lower(hex({v})) ELSE {v} END"
        return v
    args = ", ".join(f"{lit(c.name, D)}, {value(c)}" for c in spec.columns)
    return f"json_object({args})"


def _enqueue(spec: TableSpec, op: str, row: str, image: bool) -> str:
    data = _json_image(spec, row) if image else "NULL"
    return (f"  INSERT INTO sync_queue (operation, table_name, record_id, record_data, "
            f"created_at) VALUES ({lit(op, D)}, {lit(spec.name, D)}, "
            f"{row}.{ident(spec.primary_key, D)}, {data}, {WALL_STAMP});")


def triggers_sql(spec: TableSpec) -> str:
    """DROP + CREATE the four capture triggers of one table (re-runnable)."""
    t, pk = ident(spec.name, D), ident(spec.primary_key, D)
    ins, upd, upd_pk, dele = (ident(n, D) for n in trigger_names(spec))
    same_pk, new_pk = f"OLD.{pk} IS NEW.{pk}", f"OLD.{pk} IS NOT NEW.{pk}"
    return "\n".join([
        drop_triggers_sql(spec),
        f"CREATE TRIGGER {ins} AFTER INSERT ON {t} WHEN {NOT_APPLYING}\nBEGIN\n"
        f"{_enqueue(spec, 'INSERT', 'NEW', False)}\nEND;",
        f"CREATE TRIGGER {upd} AFTER UPDATE ON {t} WHEN {same_pk} AND {NOT_APPLYING}\n"
        f"BEGIN\n{_enqueue(spec, 'UPDATE', 'NEW', False)}\nEND;",
        f"CREATE TRIGGER {upd_pk} AFTER UPDATE OF {pk} ON {t} WHEN {new_pk} AND "
        f"{NOT_APPLYING}\n"
        f"BEGIN\n{_enqueue(spec, 'DELETE', 'OLD', True)}\n"
        f"{_enqueue(spec, 'INSERT', 'NEW', False)}\nEND;",
        f"CREATE TRIGGER {dele} AFTER DELETE ON {t} WHEN {NOT_APPLYING}\nBEGIN\n"
        f"{_enqueue(spec, 'DELETE', 'OLD', True)}\nEND;",
    ])


def drop_triggers_sql(spec: TableSpec) -> str:
    return "\n".join(f"DROP TRIGGER IF EXISTS {ident(n, D)};" for n in trigger_names(spec))


def schema_sql(tables: tuple[TableSpec, ...], ddl: dict[str, str]) -> str:
    """The whole ``sqlite.sql`` for a fresh (or already current) database."""
    parts = ["-- Generated by `tablesync generate`; do not edit. SQLite.",
             "PRAGMA journal_mode = WAL;", own_tables_sql()]
    for spec in tables:
        parts += [f"\n-- table {spec.name}", table_sql(ddl[spec.name]), triggers_sql(spec)]
    return "\n".join(parts) + "\n"
