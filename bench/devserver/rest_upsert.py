"""Benchmark: REST bulk upsert through the devserver vs direct psycopg, same rows, same run.

Run:  .venv/bin/python bench/devserver/rest_upsert.py [--rows 20000] [--batch 100] [--rounds 5]

Both sides upsert the same rows in batches of ``--batch`` rows, one transaction per batch,
into the same table (truncated before each pass), on the same PostgreSQL server:
* REST:   POST /rest/v1/bench_rows  Prefer: resolution=merge-duplicates, return=minimal
          (one HTTP request per batch over one keep-alive connection, service-role key;
          the httpx client runs in a child process, so client and server do not share a GIL);
* direct: INSERT ... ON CONFLICT (id) DO UPDATE via psycopg ``executemany`` per batch;
* direct_bulk: one multi-row INSERT ... SELECT FROM json_populate_recordset(...) ON CONFLICT
          per batch (what the devserver itself sends to PostgreSQL) -- the stronger baseline.
Each pass runs twice (fresh inserts, then updates of existing rows); best of ``--rounds``.
The reported ratio is REST against the FASTER of the two direct baselines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
import psycopg

from tablesync.devserver.server import DevServer

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS public.bench_rows (
  id bigint PRIMARY KEY, system_id text NOT NULL, title text, n integer,
  payload jsonb, updated_at timestamptz
)"""
UPSERT_SQL = """
INSERT INTO public.bench_rows (id, system_id, title, n, payload, updated_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET system_id = EXCLUDED.system_id, title = EXCLUDED.title,
  n = EXCLUDED.n, payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at"""


def make_rows(count: int, version: int) -> list[dict[str, Any]]:
    return [{"id": i, "system_id": "bench", "title": f"row {i} v{version}", "n": i * version,
             "payload": {"k": i, "v": version, "tags": ["a", "b"]},
             "updated_at": "2026-01-01T00:00:00Z"} for i in range(count)]


def batches(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def rest_pass(url: str, key: str, chunks: list[list[dict[str, Any]]]) -> float:
    headers = {"apikey": key, "Authorization": f"Bearer {key}",
               "Prefer": "resolution=merge-duplicates, return=minimal",
               "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        start = time.perf_counter()
        for chunk in chunks:
            resp = client.post("/rest/v1/bench_rows", content=json.dumps(chunk))
            if resp.status_code not in (200, 201):
                raise SystemExit(f"REST upsert failed: {resp.status_code} {resp.text}")
        return time.perf_counter() - start


def direct_pass(dsn: str, chunks: list[list[dict[str, Any]]]) -> float:
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for chunk in chunks:
            with conn.cursor() as cur:
                cur.executemany(UPSERT_SQL, [
                    (r["id"], r["system_id"], r["title"], r["n"], json.dumps(r["payload"]),
                     r["updated_at"]) for r in chunk])
            conn.commit()
        return time.perf_counter() - start


BULK_SQL = """
INSERT INTO public.bench_rows (id, system_id, title, n, payload, updated_at)
SELECT id, system_id, title, n, payload, updated_at
FROM json_populate_recordset(NULL::public.bench_rows, %s::json)
ON CONFLICT (id) DO UPDATE SET system_id = EXCLUDED.system_id, title = EXCLUDED.title,
  n = EXCLUDED.n, payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at"""


def direct_bulk_pass(dsn: str, chunks: list[list[dict[str, Any]]]) -> float:
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for chunk in chunks:
            conn.execute(BULK_SQL, (json.dumps(chunk),))
            conn.commit()
        return time.perf_counter() - start


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE public.bench_rows")


def run(rows: int, batch: int, rounds: int) -> dict[str, Any]:
    server = DevServer(auto_realtime=False)
    info = server.start()
    try:
        with psycopg.connect(info.dsn, autocommit=True) as conn:
            conn.execute(TABLE_SQL)
        fresh, again = batches(make_rows(rows, 1), batch), batches(make_rows(rows, 2), batch)
        child = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        passes = {
            "direct": lambda chunks: direct_pass(info.dsn, chunks),
            "direct_bulk": lambda chunks: direct_bulk_pass(info.dsn, chunks),
            "rest": lambda chunks: child.submit(rest_pass, info.url, info.service_key,
                                                chunks).result(),
        }
        results: dict[str, list[float]] = {name: [] for name in passes}
        for _ in range(rounds):
            for name, fn in passes.items():
                truncate(info.dsn)
                secs = fn(fresh) + fn(again)
                results[name].append(2 * rows / secs)
        best = {name: max(rates) for name, rates in results.items()}
        baseline = max(best["direct"], best["direct_bulk"])
        out: dict[str, Any] = {"rows": rows, "batch": batch, "rounds": rounds}
        for name in passes:
            out[f"{name}_rows_per_s"] = round(best[name])
            out[f"{name}_median"] = round(statistics.median(results[name]))
        out["ratio"] = round(best["rest"] / baseline, 3)
        out["ratio_vs_executemany"] = round(best["rest"] / best["direct"], 3)
        child.shutdown()
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.rows, args.batch, args.rounds)
    print(json.dumps(result))
    print(f"REST upsert {result['rest_rows_per_s']} rows/s; direct psycopg executemany "
          f"{result['direct_rows_per_s']} rows/s, one-statement bulk "
          f"{result['direct_bulk_rows_per_s']} rows/s at {args.batch} rows/request: "
          f"ratio {result['ratio']}x vs the faster baseline (target >= 0.3x)")


if __name__ == "__main__":
    main()
