"""Capture cost: tablesync's SQLite triggers vs plain SQLite, measured in one run.

Run: ``.venv/bin/python -m bench.capture [--runs 5] [--rows 100000] [--autocommit 5000]``

Workloads (WAL mode, default pragmas, the example's ``tasks`` table, fresh database
files per run): 100k inserts in one transaction, 5k autocommit inserts, 100k updates and
100k deletes (each in one transaction). Variants, interleaved run by run (order rotating):

* ``plain``: no triggers (the baseline);
* ``tablesync``: the generated ``sqlite.sql`` as shipped (the triggers stamp the wall
  time; the store stamps the HLC later, see ``tablesync/stamp.py``);
* ``seed-queue``: the same triggers over the seed's exact ``sync_queue`` (AUTOINCREMENT,
  ``CHECK (operation IN (...))``): what a database whose queue the seed schema made gets;
* ``hlc-trigger``: the previous design, for reference: the full HLC computed in the trigger
  (observed clock + last queued stamp) and the seed's AUTOINCREMENT;
* ``json-image``: tablesync's triggers with ``record_data = json_object(...)`` for every
  operation (the naive design), for reference.

Prints medians of CPU time (process time: robust on a shared machine) and wall time,
rows/s, and the ratio vs plain from the same run set; ``paired`` is the median over runs of
(variant / plain within the same run): the VM's CPU speed drifts by up to 2x over minutes
(every variant slows down together), and pairing each sample with the plain sample taken
seconds apart cancels most of that drift. The engine-side cost that the shipped
design moves out of the app's write path, stamping the 100k inserted entries with
``tablesync.stamp.stamp_pending``, is timed too (``stamp 100k``, tablesync variants only).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from tablesync.project import load_project
from tablesync.sql import sqlite as sq
from tablesync.stamp import stamp_pending

ROOT = Path(__file__).resolve().parent.parent
Workload = Callable[[sqlite3.Connection, int], None]


def _scripts() -> dict[str, str]:
    project = load_project(ROOT / "sync.toml")
    full = sq.schema_sql(project.tables, project.ddl)
    plain = "PRAGMA journal_mode = WAL;\n" + "\n".join(sq.table_sql(project.ddl[t.name])
                                                       for t in project.tables)
    tasks = project.table("tasks")
    image = sq._json_image(tasks, "NEW")
    naive = re.sub(r"(VALUES \('(?:INSERT|UPDATE)', 'tasks', NEW\.\"id\", )NULL",
                   lambda m: m.group(1) + image, full)
    assert naive != full
    or_check = "operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE'"
    pk, seed_pk = "id INTEGER PRIMARY KEY,", "id INTEGER PRIMARY KEY AUTOINCREMENT,"
    assert or_check in full and pk in full
    seed = full.replace(or_check, "operation IN ('INSERT','UPDATE','DELETE')").replace(
        pk, seed_pk)
    old_hlc = ("max(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) << 16, "
               "(SELECT hlc FROM _tablesync_state) + 1, coalesce((SELECT hlc FROM sync_queue "
               "ORDER BY id DESC LIMIT 1), 0) + 1)")
    hlc_trigger = full.replace(pk, seed_pk).replace(
        "record_data, created_at) VALUES", "record_data, hlc) VALUES").replace(
        "julianday('now'));", old_hlc + ");")
    assert hlc_trigger.count(old_hlc) == full.count("julianday('now'));") > 0
    return {"plain": plain, "tablesync": full, "seed-queue": seed,
            "hlc-trigger": hlc_trigger, "json-image": naive}


def insert_batch(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO tasks (id, system_id, title, payload) VALUES (?, ?, ?, ?)",
                     ((f"t{i}", "system-a", f"title {i}", "x" * 40) for i in range(n)))
    conn.execute("COMMIT")


def insert_autocommit(conn: sqlite3.Connection, n: int) -> None:
    for i in range(n):
        conn.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                     (f"a{i}", "system-a", "t"))


def _stamp(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    assert stamp_pending(conn) == n
    conn.execute("COMMIT")


def update_batch(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("UPDATE tasks SET title = ?, status = 'done' WHERE id = ?",
                     ((f"new {i}", f"t{i}") for i in range(n)))
    conn.execute("COMMIT")


def delete_batch(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("DELETE FROM tasks WHERE id = ?", ((f"t{i}",) for i in range(n)))
    conn.execute("COMMIT")


def one_run(script: str, rows: int, auto: int,
            folder: Path) -> dict[str, tuple[float, float]]:
    """All workloads on a fresh database made by ``script``; (cpu s, wall s) each."""
    db = folder / f"{time.monotonic_ns()}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(script)
    out = {}
    k, a = f"{rows // 1000}k", f"{auto // 1000}k" if auto >= 1000 else str(auto)
    stamps = "_tablesync_stamp" in script and "julianday('now'));" in script
    for name, fn, n in ((f"insert {k} (1 tx)", insert_batch, rows),
                        (f"stamp {k} (engine)", _stamp if stamps else None, rows),
                        (f"insert {a} (autocommit)", insert_autocommit, auto),
                        (f"update {k} (1 tx)", update_batch, rows),
                        (f"delete {k} (1 tx)", delete_batch, rows)):
        if fn is None:
            continue
        c0, t0 = time.process_time(), time.perf_counter()
        fn(conn, n)
        out[name] = (time.process_time() - c0, time.perf_counter() - t0)
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--autocommit", type=int, default=5_000)
    args = ap.parse_args()
    scripts = _scripts()
    times: dict[str, dict[str, list[tuple[float, float]]]] = {v: {} for v in scripts}
    names = list(scripts)
    with tempfile.TemporaryDirectory(prefix="tablesync-bench-") as tmp:
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for variant in order:
                for k, v in one_run(scripts[variant], args.rows, args.autocommit,
                                    Path(tmp)).items():
                    times[variant].setdefault(k, []).append(v)
    print(f"SQLite {sqlite3.sqlite_version}, WAL, {args.runs} interleaved runs; ratio = "
          "variant / plain (same run set); cpu = process time, wall = elapsed")
    print(f"{'workload':<24}{'variant':<12}{'cpu med s':>10}{'rows/s':>10}{'ratio':>7}"
          f"{'cpu min':>9}{'ratio':>7}{'wall med':>10}{'ratio':>7}{'paired':>8}")
    works = list(times["tablesync"])
    for work in works:
        n = args.autocommit if "autocommit" in work else args.rows
        base = _summary(times["plain"].get(work) or times["plain"][works[0]])
        for variant in scripts:
            if work not in times[variant]:
                continue
            cpu_med, cpu_min, wall_med = _summary(times[variant][work])
            plain = times["plain"].get(work) or times["plain"][works[0]]
            paired = statistics.median(v[0] / p[0] for v, p in zip(times[variant][work], plain))
            print(f"{work:<24}{variant:<12}{cpu_med:>10.3f}{n / cpu_med:>10,.0f}"
                  f"{cpu_med / base[0]:>6.2f}x{cpu_min:>9.3f}{cpu_min / base[1]:>6.2f}x"
                  f"{wall_med:>10.3f}{wall_med / base[2]:>6.2f}x{paired:>7.2f}x")


def _summary(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median cpu, min cpu, median wall) of one workload's samples."""
    cpu = [c for c, _ in samples]
    return statistics.median(cpu), min(cpu), statistics.median(w for _, w in samples)

if __name__ == "__main__":
    main()
