"""Capture cost: tablesync's SQLite triggers vs plain SQLite, measured in one run.

Run: ``.venv/bin/python -m bench.capture [--runs 5] [--rows 100000] [--autocommit 5000]``

Workloads (WAL mode, default pragmas, the example's ``tasks`` table, fresh database
files per run): 100k inserts in one transaction, 5k autocommit inserts, 100k updates and
100k deletes (each in one transaction). Variants, interleaved run by run (order rotating):

* ``plain``: no triggers (the baseline);
* ``tablesync``: the generated ``sqlite.sql`` as shipped;
* ``seed-check``: the same, but sync_queue's CHECK written as the seed's ``IN (...)``
  (what a database whose sync_queue was created by the seed schema gets);
* ``no-autoinc``: the same as tablesync without AUTOINCREMENT (for reference only; the
  contract keeps the seed's AUTOINCREMENT);
* ``json-image``: tablesync's triggers with ``record_data = json_object(...)`` for every
  operation (the naive design), for reference.

Prints medians of CPU time (process time: robust on a shared machine) and wall time,
rows/s, and the ratio vs plain from the same run.
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
    assert or_check in full and "AUTOINCREMENT" in full
    seed = full.replace(or_check, "operation IN ('INSERT','UPDATE','DELETE')")
    no_ai = full.replace(" AUTOINCREMENT", "")
    return {"plain": plain, "tablesync": full, "seed-check": seed, "no-autoinc": no_ai,
            "json-image": naive}


def insert_batch(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO tasks (id, system_id, title, payload) VALUES (?, ?, ?, ?)",
                     ((f"t{i}", "system-a", f"title {i}", "x" * 40) for i in range(n)))
    conn.execute("COMMIT")


def insert_autocommit(conn: sqlite3.Connection, n: int) -> None:
    for i in range(n):
        conn.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                     (f"a{i}", "system-a", "t"))


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
    for name, fn, n in ((f"insert {k} (1 tx)", insert_batch, rows),
                        (f"insert {a} (autocommit)", insert_autocommit, auto),
                        (f"update {k} (1 tx)", update_batch, rows),
                        (f"delete {k} (1 tx)", delete_batch, rows)):
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
          f"{'cpu min':>9}{'ratio':>7}{'wall med':>10}{'ratio':>7}")
    for work in times["plain"]:
        n = args.autocommit if "autocommit" in work else args.rows
        base = _summary(times["plain"][work])
        for variant in scripts:
            cpu_med, cpu_min, wall_med = _summary(times[variant][work])
            print(f"{work:<24}{variant:<12}{cpu_med:>10.3f}{n / cpu_med:>10,.0f}"
                  f"{cpu_med / base[0]:>6.2f}x{cpu_min:>9.3f}{cpu_min / base[1]:>6.2f}x"
                  f"{wall_med:>10.3f}{wall_med / base[2]:>6.2f}x")


def _summary(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median cpu, min cpu, median wall) of one workload's samples."""
    cpu = [c for c, _ in samples]
    return statistics.median(cpu), min(cpu), statistics.median(w for _, w in samples)

if __name__ == "__main__":
    main()
