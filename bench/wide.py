"""The wide-row push variant of ``bench.sync`` (issue 13 item 7): ``--only push_wide``.

A table of 20 columns of mixed types (integers, reals, numerics, a 1 KB text, a blob,
boolean, date, timestamps, time, jsonb, uuid) next to the narrow ``tasks`` push. N rows
queued by a plain sqlite3 app are drained by the engine's push cycles, against the
backend's own REST bulk upsert of the same rows (wire form: bytea as hex, booleans, the
JSON value) into a clean table, same batch size, same user token, in the same run.

The values are written in their canonical form (what Postgres stores and prints), as an
application that reads back what it wrote would hold them: no canonical values come back,
as in the steady state. Deterministic (row i is always the same).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tablesync.devserver.server import DevServerInfo
from tablesync.project import Project, load_project
from tablesync.sql import postgres
from tablesync.sql.wire import codec

from bench.sync import cpu, engine_for, pg, rest_upsert, wait_for_capture

TABLE = "wide"
SCHEMA = """CREATE TABLE wide (
    id TEXT PRIMARY KEY,
    system_id TEXT NOT NULL,
    qty INTEGER,
    big BIGINT,
    small SMALLINT,
    ratio REAL,
    score DOUBLE,
    price NUMERIC(12, 2),
    amount NUMERIC,
    body TEXT,
    title TEXT,
    code VARCHAR(40),
    data BLOB,
    active BOOLEAN,
    day DATE,
    created_at TIMESTAMP,
    updated_at TIMESTAMPTZ,
    at_time TIME,
    meta JSONB,
    ref UUID
);
"""
PURGE = "SET tablesync.hard_delete = 'on'; DELETE FROM wide"
TEXT_1K = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit; ünïcödé 🙂 "
           * 16)[:1024]


def project_for(tmp: Path, info: DevServerInfo, system: str, **sync: Any) -> Project:
    """A project with the wide table only (its own schemas folder under ``tmp``)."""
    schemas = tmp / "wide-schemas"
    schemas.mkdir(exist_ok=True)
    (schemas / "wide.sql").write_text(SCHEMA)
    cfg = tmp / f"{system}-wide.toml"
    settings = {"interval": 10.0, "debounce": 0.05, "poll_interval": 30.0, **sync}
    cfg.write_text(
        f'[system]\nid = "{system}"\ndatabase = "{tmp / system}-wide.db"\n'
        f'[supabase]\nurl = "{info.url}"\nanon_key = "{info.anon_key}"\n'
        f'email = "{system}@example.com"\n[sync]\n'
        + "".join(f"{k} = {v}\n" for k, v in settings.items())
        + f'[paths]\nschemas = "{schemas}"\ntoken_store = "{tmp / system}-wide-auth.json"\n'
        f'conflict_log = "{tmp / system}-wide-conflicts.log"\n'
        f'[tables.{TABLE}]\nschema = "wide.sql"\nprimary_key = "id"\nscope = "system_id"\n')
    return load_project(cfg)


def row(i: int, system: str) -> tuple[Any, ...]:
    """Row ``i`` (canonical values, about 1.3 KB of data), in SCHEMA's column order."""
    return (f"wide-{i}", system, i, i * 1_000_003, i % 30_000, i / 7, i * 0.001 + 0.5,
            round(i * 1.25 % 100_000, 2), i * 1000 + 0.5, TEXT_1K, f"title {i}",
            f"CODE-{i:08d}", i.to_bytes(8, "big") + b"\x00\xff" * 12, i % 2,
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
            f"2024-01-01T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}",
            f"2024-06-01T{i % 24:02d}:{i % 60:02d}:00+00:00", f"{i % 24:02d}:30:00",
            json.dumps({"i": i, "tags": ["a", "b"], "nested": {"ok": True}},
                       separators=(", ", ": ")),
            str(uuid.UUID(int=i * 7919 + 1)))


def queue_inserts(db: Path, system: str, n: int) -> None:
    """N inserts by a plain sqlite3 app (the triggers fill sync_queue), one transaction."""
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("BEGIN")
    app.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * 20)})",
                    (row(i, system) for i in range(n)))
    app.execute("COMMIT")
    app.close()


def adopted(db: Path, system: str, n: int) -> list[str]:
    """Ids among the first ``n`` rows whose local values differ from what was written
    (i.e. the push adopted a canonical value from the server)."""
    conn = sqlite3.connect(db)
    try:
        return [r[0] for i in range(n)
                for r in conn.execute(f"SELECT * FROM {TABLE} WHERE id = ?", (f"wide-{i}",))
                if r != row(i, system)]
    finally:
        conn.close()


def bench_push_wide(info: DevServerInfo, tmp: Path, n: int, batch: int) -> dict[str, Any]:
    """Push drain of ``n`` wide rows vs the REST bulk upsert of the same rows."""
    project = project_for(tmp, info, "system-a", batch_size=batch)
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
    capture = wait_for_capture(info, TABLE)
    spec = project.tables[0]
    wire = codec(spec)
    with engine_for(project, info, realtime=False) as engine:
        queue_inserts(project.config.database_path, "system-a", n)
        assert engine.session is not None
        token = engine.session.ensure().access_token.reveal()
        changes = engine.store.pending(limit=n)
        rows = []
        for c in changes:
            data = dict(wire.to_wire(dict(c.state.data)))
            data["meta"] = json.loads(data["meta"])    # a REST client sends the JSON value
            rows.append({**data, "_ts_hlc": c.state.version.hlc, "_ts_origin": "system-a"})
        row_bytes = len(json.dumps(rows[0], ensure_ascii=False).encode())
        base = rest_upsert(info, token, rows, batch, table=TABLE)
        (stored,) = pg(info, "SELECT count(*) FROM wide")[0]
        if stored != n:
            raise SystemExit(f"push_wide: the REST baseline stored {stored} rows, expected {n}")
        pg(info, PURGE)
        pg(info, "VACUUM ANALYZE wide")
        cycles = engine._cycles()
        t0, c0 = time.perf_counter(), cpu()
        for _ in range(10 * n):
            result = cycles.push_batch(None)
            if result.outcome != "ok":
                raise SystemExit(f"push_wide failed: {result.outcome} "
                                 f"{engine.status.last_error}")
            if not result.backlog:
                break
        wall, client_cpu = time.perf_counter() - t0, cpu() - c0
    (count,) = pg(info, "SELECT count(*) FROM wide WHERE _ts_origin = 'system-a'")[0]
    if count != n:
        raise SystemExit(f"push_wide: {count} rows on the server, expected {n}")
    changed = adopted(project.config.database_path, "system-a", min(n, 200))
    if changed:
        raise SystemExit(f"push_wide: the server returned canonical values for {changed}: "
                         "the bench rows are meant to be canonical already")
    pg(info, PURGE)
    return {"rows": n, "batch": batch, "columns": len(spec.columns),
            "row_json_bytes": row_bytes, "rows_per_s": n / wall, "seconds": wall,
            "mb_per_s": n * row_bytes / wall / 1e6,
            "client_cpu_us_per_row": client_cpu / n * 1e6, "realtime_capture": capture,
            "baseline_rows_per_s": n / base, "baseline_seconds": base}


def table_line(p: dict[str, Any]) -> str:
    """The wide push's row of bench.sync's result table."""
    return (f"| push drain, wide ({p['columns']} columns, ~{p['row_json_bytes']:,} B JSON/row), "
            f"{p['rows']:,} rows, batch {p['batch']} | {p['rows_per_s']:,.0f} rows/s "
            f"({p['mb_per_s']:.1f} MB/s) | REST bulk upsert {p['baseline_rows_per_s']:,.0f} "
            f"rows/s | {p['rows_per_s'] / p['baseline_rows_per_s']:.2f}x | (none) |")
