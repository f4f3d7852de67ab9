"""Benchmark of the sync engine (issue 4 item 10): five figures (six with the
wide-row push of issue 13, seven with push in real operation of issue 14), each beside a
baseline measured in the same run on the same devserver + PostgreSQL.

Run:  .venv/bin/python -m bench.sync [--quick] [--json out.json] [--only push,catchup,...]
(figures: push_live, push, push_wide, latency, catchup, memory)

* push in real operation (``bench/push_live.py``): ``tablesync run`` (the CLI process,
  default settings) drains N rows the app commits while it runs, with Realtime on
  (the default transport) and with Realtime off, beside the REST bulk upsert; this is the
  figure users get;

* push drain: N queued inserts in SQLite pushed through ``tablesync_apply_tasks`` (the
  engine's push cycles, ``batch_size`` from ``--batch``) vs the backend's own REST bulk upsert
  (``POST /rest/v1/tasks``, merge-duplicates, same rows, same batch size, same user token);
* push drain, wide rows (``bench/wide.py``): the same with 20 columns of mixed types and a
  1 KB text per row, against the same kind of REST bulk upsert;
* remote -> local: INSERT committed in PostgreSQL -> row committed in the subscriber's SQLite
  (the engine's apply callback runs right after the apply transaction commits) vs raw
  LISTEN/NOTIFY (commit of ``pg_notify`` -> notification received);
* local -> remote: commit in SQLite -> row committed in PostgreSQL (an AFTER INSERT trigger
  notifies the bench on a LISTEN connection) vs the same notification for a direct psycopg
  INSERT (commit -> notification);
* catch-up: M rows written server-side pulled into an empty SQLite by the engine's catch-up
  (REST pages of 1000) vs raw psycopg fetch + plain sqlite ``executemany`` in one transaction;
* memory: peak RSS of a child process draining K queued changes vs its RSS right before the
  drain (engine built, signed in).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psycopg

from tablesync.daemon import realtime_factory
from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.model import Change
from tablesync.project import Project, load_project
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.sql import postgres
from tablesync.store import LocalStore
from tablesync.vault import Secret, Vault

ROOT = Path(__file__).resolve().parents[1]
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
# a plain DELETE keeps a tombstone (it must reach the replicas); the bench wants rows gone
PURGE = "SET tablesync.hard_delete = 'on'; DELETE FROM tasks"
SIZES = {"full": {"push_live": 50_000, "push": 100_000, "push_wide": 50_000, "latency": 300, "catchup": 100_000,
                  "memory": 1_000_000},
         "quick": {"push_live": 10_000, "push": 10_000, "push_wide": 10_000, "latency": 60, "catchup": 10_000,
                   "memory": 50_000}}
ARRIVE_TRIGGER = """
CREATE OR REPLACE FUNCTION public.bench_arrive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_arrive', NEW.id); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS bench_arrive ON public.tasks;
CREATE TRIGGER bench_arrive AFTER INSERT ON public.tasks FOR EACH ROW
  WHEN (NEW.title LIKE 'lat-%') EXECUTE FUNCTION public.bench_arrive();
CREATE TABLE IF NOT EXISTS public.bench_raw (id text PRIMARY KEY);
CREATE OR REPLACE FUNCTION public.bench_raw_arrive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_arrive', NEW.id); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS bench_raw_arrive ON public.bench_raw;
CREATE TRIGGER bench_raw_arrive AFTER INSERT ON public.bench_raw FOR EACH ROW
  EXECUTE FUNCTION public.bench_raw_arrive();
"""


# ---------------------------------------------------------------------------- setup

def project_for(tmp: Path, info: DevServerInfo, system: str, **sync: Any) -> Project:
    cfg = tmp / f"{system}.toml"
    settings = {"interval": 10.0, "debounce": 0.05, "poll_interval": 30.0, **sync}
    cfg.write_text(
        f'[system]\nid = "{system}"\ndatabase = "{tmp / system}.db"\n'
        f'[supabase]\nurl = "{info.url}"\nanon_key = "{info.anon_key}"\n'
        f'email = "{system}@example.com"\n[sync]\n'
        + "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n"
                  for k, v in settings.items())
        + f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp / system}-auth.json"\n'
        f'conflict_log = "{tmp / system}-conflicts.log"\n[tables.projects]' + TABLES)
    return load_project(cfg)


def engine_for(project: Project, info: DevServerInfo, realtime: bool = True) -> Engine:
    system = project.config.system.id
    remote = RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(project.config.resolve_path(project.config.paths.token_store)),
                      project=info.url, email=f"{system}@example.com",
                      password=Secret("pw-" + system))
    remote.tokens = session
    return Engine(project, remote=remote, session=session,
                  realtime_factory=realtime_factory if realtime else None, own_remote=True)


def queue_inserts(db: Path, system: str, n: int, prefix: str) -> None:
    """N inserts by a plain sqlite3 app (the triggers fill sync_queue), one transaction."""
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("BEGIN")
    app.executemany("INSERT INTO tasks (id, system_id, title, priority, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((f"{prefix}{i}", system, f"task {i}", i % 5, "x" * 40) for i in range(n)))
    app.execute("COMMIT")
    app.close()


def pg(info: DevServerInfo, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode() if not args else sql, args or None)
        return cur.fetchall() if cur.description else []


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (or ``VmHWM``: its peak since exec) in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu() -> float:
    return time.process_time()


# ---------------------------------------------------------------------------- push

def wait_for_capture(info: DevServerInfo, table: str = "tasks", timeout: float = 20.0) -> bool:
    """Wait until the devserver's Realtime service installed its change-capture trigger on
    ``table`` (it re-reads the publication every 5 s): push and baseline then both pay it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg(info, "SELECT 1 FROM pg_trigger WHERE tgname = 'tablesync_realtime' AND "
                    "tgrelid = %s::regclass", f"public.{table}"):
            return True
        time.sleep(0.2)
    return False


def bench_push(info: DevServerInfo, tmp: Path, n: int, batch: int) -> dict[str, Any]:
    capture = wait_for_capture(info)
    project = project_for(tmp, info, "system-a", batch_size=batch)
    with engine_for(project, info, realtime=False) as engine:
        queue_inserts(project.config.database_path, "system-a", n, "push-")
        assert engine.session is not None
        token = engine.session.ensure().access_token.reveal()
        changes = engine.store.pending(limit=n)
        rows = [{**c.state.data, "_ts_hlc": c.state.version.hlc, "_ts_origin": "system-a"}
                for c in changes]
        base = rest_upsert(info, token, rows, batch)
        pg(info, PURGE)
        pg(info, "VACUUM ANALYZE tasks")         # both sides start from a clean table
        cycles = engine._cycles()
        t0, c0 = time.perf_counter(), cpu()
        for _ in range(10 * n):
            result = cycles.push_batch(None)
            if result.outcome != "ok":
                raise SystemExit(f"push failed: {result.outcome} {engine.status.last_error}")
            if not result.backlog:
                break
        wall, client_cpu = time.perf_counter() - t0, cpu() - c0
    (count,) = pg(info, "SELECT count(*) FROM tasks WHERE _ts_origin = 'system-a'")[0]
    if count != n:
        raise SystemExit(f"push: {count} rows on the server, expected {n}")
    pg(info, PURGE)
    pg(info, "VACUUM ANALYZE tasks")
    return {"rows": n, "batch": batch, "rows_per_s": n / wall, "seconds": wall,
            "client_cpu_us_per_row": client_cpu / n * 1e6, "realtime_capture": capture,
            "baseline_rows_per_s": n / base, "baseline_seconds": base}


def rest_upsert(info: DevServerInfo, token: str, rows: list[dict[str, Any]],
                batch: int, table: str = "tasks") -> float:
    headers = {"apikey": info.anon_key, "Authorization": f"Bearer {token}",
               "Prefer": "resolution=merge-duplicates, return=minimal",
               "Content-Type": "application/json"}
    with httpx.Client(base_url=info.url, headers=headers, timeout=120) as client:
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            body = json.dumps(rows[i:i + batch], ensure_ascii=False).encode()  # as the engine
            resp = client.post(f"/rest/v1/{table}", content=body)
            if resp.status_code not in (200, 201):
                raise SystemExit(f"REST upsert failed: {resp.status_code} {resp.text[:300]}")
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------- latency

class Arrivals:
    """A LISTEN connection on channel ``bench_arrive`` recording arrival times by id."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN bench_arrive")
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            for note in self.conn.notifies(timeout=0.2):
                with self.cond:
                    self.seen[note.payload] = time.perf_counter()
                    self.cond.notify_all()

    def wait(self, key: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while key not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"latency: {key} never arrived")
                self.cond.wait(left)
            return self.seen[key]

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.conn.close()


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": statistics.fmean(ms)}


def bench_latency(info: DevServerInfo, tmp: Path, n: int) -> dict[str, Any]:
    pg(info, ARRIVE_TRIGGER)
    project = project_for(tmp, info, "system-c", debounce=0.05)
    pg(info, "SELECT 1")
    arrivals = Arrivals(info.dsn)
    got: dict[str, float] = {}
    cond = threading.Condition()

    def on_change(ch: Change) -> None:
        with cond:
            got[ch.record_id] = time.perf_counter()
            cond.notify_all()

    try:
        with engine_for(project, info) as engine:
            engine.on("tasks", on_change)
            engine.start()
            wait(lambda: engine.status.state == "connected" and engine.status.realtime, 30,
                 "engine connected with Realtime")
            time.sleep(1.0)
            writer = psycopg.connect(info.dsn, autocommit=True)
            down, raw_down, up, raw_up = [], [], [], []
            app = sqlite3.connect(project.config.database_path, isolation_level=None,
                                  timeout=30)
            for i in range(-10, n):             # 10 warm-up rounds
                # remote -> local
                rid = f"down-{i}"
                writer.execute("INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, %s)",
                               (rid, "system-c", f"r{i}"))
                t0 = time.perf_counter()
                with cond:
                    ok = cond.wait_for(lambda: rid in got, 10)
                if not ok:
                    raise SystemExit(f"remote->local: {rid} never applied")
                # raw LISTEN/NOTIFY
                writer.execute("SELECT pg_notify('bench_arrive', %s)", (f"raw-{i}",))
                t1 = time.perf_counter()
                t_raw = arrivals.wait(f"raw-{i}")
                # local -> remote
                lid = f"up-{i}"
                app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, ?)",
                            (lid, "system-c", f"lat-{i}"))
                t2 = time.perf_counter()
                t_up = arrivals.wait(lid)
                # direct INSERT baseline for local -> remote
                writer.execute("INSERT INTO bench_raw (id) VALUES (%s)", (f"rawup-{i}",))
                t3 = time.perf_counter()
                t_raw_up = arrivals.wait(f"rawup-{i}")
                if i >= 0:
                    down.append(max(0.0, got[rid] - t0))
                    raw_down.append(max(0.0, t_raw - t1))
                    up.append(max(0.0, t_up - t2))
                    raw_up.append(max(0.0, t_raw_up - t3))
                time.sleep(0.02)
            writer.close()
            app.close()
    finally:
        arrivals.close()
    return {"samples": n, "remote_to_local": summary(down), "raw_listen_notify": summary(raw_down),
            "local_to_remote": summary(up), "direct_insert_notify": summary(raw_up)}


def wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------- catch-up

def bench_catchup(info: DevServerInfo, tmp: Path, n: int,
                  analyze: bool = True) -> dict[str, Any]:
    pg(info, PURGE + " WHERE system_id = 'system-b'")
    pg(info, "INSERT INTO tasks (id, system_id, title, priority, payload) SELECT 'cu-' || g, "
             "'system-b', 'task ' || g, g % 5, repeat('x', 40) FROM generate_series(1, "
             f"{int(n)}) g")
    # What autovacuum does within a minute of a bulk load. Without statistics the planner
    # takes the fresh scope for a few rows and sorts all of it for every page (O(n^2));
    # docs/benchmarks.md "Sync engine" has the figure without it.
    if analyze:
        pg(info, "ANALYZE tasks")
    best_base = min(raw_fetch(info, tmp / f"raw-{k}.db", n) for k in range(3))
    project = project_for(tmp, info, "system-b")
    with engine_for(project, info, realtime=False) as engine:
        assert engine.session is not None
        engine.session.ensure()
        t0, c0 = time.perf_counter(), cpu()
        result = engine._cycles().catch_up(None)
        wall, used = time.perf_counter() - t0, cpu() - c0
        if result.outcome != "ok":
            raise SystemExit(f"catch-up failed: {engine.status.last_error}")
    app = sqlite3.connect(project.config.database_path)
    (count,) = app.execute("SELECT count(*) FROM tasks").fetchone()
    app.close()
    if count != n:
        raise SystemExit(f"catch-up: {count} rows locally, expected {n}")
    pg(info, PURGE + " WHERE system_id = 'system-b'")
    return {"rows": n, "rows_per_s": n / wall, "seconds": wall, "cpu_s": used, "analyze": analyze,
            "baseline_rows_per_s": n / best_base, "baseline_seconds": best_base}


def raw_fetch(info: DevServerInfo, db: Path, n: int) -> float:
    """psycopg fetch of the same rows + plain sqlite executemany, one transaction."""
    ddl = (ROOT / "schemas" / "tasks.sql").read_text().replace(
        "REFERENCES projects (id)", "")
    lite = sqlite3.connect(db, isolation_level=None)
    lite.execute(ddl)
    t0 = time.perf_counter()
    with psycopg.connect(info.dsn) as conn:
        rows = conn.execute("SELECT id, system_id, project_id, title, status, priority, "
                            "payload, updated_at FROM tasks WHERE system_id = 'system-b' "
                            "ORDER BY _ts_seq").fetchall()
    lite.execute("BEGIN")
    lite.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    lite.execute("COMMIT")
    used = time.perf_counter() - t0
    lite.close()
    assert len(rows) == n
    return used


# ---------------------------------------------------------------------------- memory

def bench_memory(info: DevServerInfo, tmp: Path, n: int, batch: int) -> dict[str, Any]:
    """Runs in a child process so peak RSS is this phase's alone."""
    out = tmp / "memory.json"
    subprocess.run([sys.executable, "-m", "bench.sync", "--memory-child", str(n),
                    "--batch", str(batch), "--info", info.to_json(), "--tmp", str(tmp),
                    "--out", str(out)], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def memory_child(info: DevServerInfo, tmp: Path, n: int, batch: int) -> dict[str, Any]:
    project = project_for(tmp, info, "system-d", batch_size=batch)
    LocalStore.open(project).close()
    # the app fills the queue in its own process, so this process's peak is the drain's
    subprocess.run([sys.executable, "-c", "import sys, bench.sync as b; b.queue_inserts("
                    "sys.argv[1], 'system-d', int(sys.argv[2]), 'mem-')",
                    str(project.config.database_path), str(n)], check=True, cwd=ROOT)
    with engine_for(project, info, realtime=False) as engine:
        assert engine.session is not None
        engine.session.ensure()
        cycles = engine._cycles()
        base = rss_mb()
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_mb())

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        for _ in range(10 * n):
            result = cycles.push_batch(None)
            if result.outcome != "ok":
                raise SystemExit(f"memory drain failed: {engine.status.last_error}")
            if not result.backlog:
                break
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        hwm = rss_mb("VmHWM")
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into a forked child's
    # ru_maxrss, which made it report the bench driver's own peak
    return {"changes": n, "baseline_rss_mb": base, "peak_rss_mb": max(peak[0], hwm, base),
            "sampled_peak_rss_mb": peak[0], "vm_hwm_mb": hwm, "seconds": wall,
            "rows_per_s": n / wall}


# ---------------------------------------------------------------------------- main

def serve_child(conn: Any) -> None:
    """The backend in its own process (as Supabase is): start, report info, wait."""
    srv = DevServer()
    srv.start()
    try:
        conn.send(srv.info.to_json())
        conn.recv()                              # any message (or EOF) stops it
    except EOFError:
        pass
    finally:
        srv.cleanup()


class Backend:
    """A DevServer (own PostgreSQL) in a child process."""

    def __init__(self) -> None:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve_child, args=(child,), daemon=True)
        self._proc.start()
        if not self._conn.poll(120):
            raise SystemExit("the devserver did not start within 120 s")
        self.info = DevServerInfo(**json.loads(self._conn.recv()))

    def stop(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._proc.join(60)


def setup(info: DevServerInfo) -> DevServerInfo:
    project = load_project(ROOT / "sync.toml")
    pg(info, postgres.schema_sql(project.tables, project.ddl))
    with RestRemote(info.url, info.anon_key) as admin:
        for system in ("system-a", "system-b", "system-c", "system-d"):
            admin.admin_create_user(Secret(info.service_key), f"{system}@example.com",
                                    Secret("pw-" + system), {"system_id": system})
    return info


def table(res: dict[str, Any]) -> str:
    lines = ["| figure | tablesync | baseline (same run) | ratio | target |",
             "| --- | ---: | ---: | ---: | --- |"]
    if "push_live" in res:
        live = res["push_live"]
        for key, name in (("realtime_on", "Realtime on"), ("realtime_off", "Realtime off"),
                          ("postgres_changes", "Realtime on, postgres_changes transport")):
            r = live[key]
            lines.append(f"| `tablesync run`, {name}, {r['rows']:,} rows, default batch "
                         f"{live['batch']} | {r['rows_per_s']:,.0f} rows/s | REST bulk upsert "
                         f"{live['baseline']['rows_per_s']:,.0f} rows/s | "
                         f"{r['rows_per_s'] / live['baseline']['rows_per_s']:.2f}x | "
                         + ("on >= 0.8x off: " f"{live['on_vs_off']:.2f}x |" if key == "realtime_on"
                            else "|"))
    if "push" in res:
        p = res["push"]
        lines.append(f"| push drain, {p['rows']:,} rows, batch {p['batch']} | "
                     f"{p['rows_per_s']:,.0f} rows/s | REST bulk upsert {p['baseline_rows_per_s']:,.0f}"
                     f" rows/s | {p['rows_per_s'] / p['baseline_rows_per_s']:.2f}x | >= 10,000 rows/s |")
    if "push_wide" in res:
        from bench.wide import table_line
        lines.append(table_line(res["push_wide"]))
    if "latency" in res:
        lat = res["latency"]
        for key, base, name, target in (
                ("remote_to_local", "raw_listen_notify", "remote -> local", "p50 < 10, p99 < 50 ms"),
                ("local_to_remote", "direct_insert_notify", "local -> remote", "p50 < 100 ms")):
            a, b = lat[key], lat[base]
            lines.append(f"| {name} p50 / p99 ({lat['samples']} samples) | "
                         f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f} ms | {base.replace('_', ' ')} "
                         f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} ms | "
                         f"{a['p50_ms'] / max(b['p50_ms'], 1e-3):.0f}x / "
                         f"{a['p99_ms'] / max(b['p99_ms'], 1e-3):.0f}x | {target} |")
    if "catchup" in res:
        c = res["catchup"]
        lines.append(f"| catch-up, {c['rows']:,} rows into empty SQLite | {c['rows_per_s']:,.0f} "
                     f"rows/s | psycopg fetch + sqlite executemany {c['baseline_rows_per_s']:,.0f}"
                     f" rows/s | {c['rows_per_s'] / c['baseline_rows_per_s']:.2f}x | >= 20,000 rows/s |")
    if "memory" in res:
        m = res["memory"]
        lines.append(f"| peak RSS draining {m['changes']:,} changes | {m['peak_rss_mb']:.0f} MB "
                     f"({m['rows_per_s']:,.0f} rows/s) | process before the drain "
                     f"{m['baseline_rss_mb']:.0f} MB | {m['peak_rss_mb'] / m['baseline_rss_mb']:.2f}x"
                     f" | < 200 MB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--only", default="push_live,push,push_wide,latency,catchup,memory")
    ap.add_argument("--batch", type=int, default=1000, help="push batch size (default 1000)")
    ap.add_argument("--no-analyze", action="store_true",
                    help="catch-up: skip ANALYZE after loading the rows (stale planner statistics)")
    ap.add_argument("--json", dest="json_out", help="also write the figures to this file")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--info", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        info = DevServerInfo(**json.loads(args.info))
        res = memory_child(info, Path(args.tmp), args.memory_child, args.batch)
        Path(args.out).write_text(json.dumps(res))
        return
    sizes = SIZES["quick" if args.quick else "full"]
    only = set(args.only.split(","))
    res: dict[str, Any] = {"load_before": os.getloadavg(), "sizes": sizes}
    backend = Backend()
    try:
        info = setup(backend.info)
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
            tmp = Path(d)
            if "push_live" in only:
                from bench.push_live import bench_push_live   # it imports this module
                res["push_live"] = bench_push_live(info, sizes["push_live"])
                print("push_live", json.dumps({k: v for k, v in res["push_live"].items()
                                               if k not in ("realtime_on", "realtime_off",
                                                            "postgres_changes")}), flush=True)
            if "push" in only:
                res["push"] = bench_push(info, tmp, sizes["push"], args.batch)
                print("push", json.dumps(res["push"]), flush=True)
            if "push_wide" in only:
                from bench.wide import bench_push_wide   # bench.wide imports this module
                res["push_wide"] = bench_push_wide(info, tmp, sizes["push_wide"], args.batch)
                print("push_wide", json.dumps(res["push_wide"]), flush=True)
            if "latency" in only:
                res["latency"] = bench_latency(info, tmp, sizes["latency"])
                print("latency", json.dumps(res["latency"]), flush=True)
            if "catchup" in only:
                res["catchup"] = bench_catchup(info, tmp, sizes["catchup"],
                                               analyze=not args.no_analyze)
                print("catchup", json.dumps(res["catchup"]), flush=True)
            if "memory" in only:
                res["memory"] = bench_memory(info, tmp, sizes["memory"], args.batch)
                print("memory", json.dumps(res["memory"]), flush=True)
    finally:
        backend.stop()
    res["load_after"] = os.getloadavg()
    print()
    print(table(res))
    print(f"\nload average before/after: {res['load_before'][0]:.1f} / {res['load_after'][0]:.1f}"
          f" ({os.cpu_count()} CPUs)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
