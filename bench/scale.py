"""Scale run (issue 6 item 5, issue 14 item 4): N systems against one devserver, for each
Realtime transport (``broadcast``, ``postgres_changes``); not a test. Engines run with
default ``[sync]`` settings except ``realtime_transport``.

Processes (2 cores are assumed; everything on 127.0.0.1):

* backend: one child process running the devserver (uvicorn: REST + Auth + Realtime) on
  its own PostgreSQL cluster; commands over a pipe (``stop``/``start`` the HTTP side);
* engines: ``--workers`` child processes, each running its share of the N engines as
  library threads (``Engine.start()``), each engine with its own SQLite file, user, vault;
* this process: the central writer (service-key REST inserts into random systems' scopes)
  and the measurements (``/proc``: CPU seconds and memory of the devserver process and of
  every PostgreSQL process).

Per N: (1) connect all engines; (2) load for ``--duration`` s: every system inserts
``--rate`` rows/s locally, the central writer ``--central-rate`` tasks/s in total; measure
push throughput, central-task delivery latency (REST commit -> engine callback), server
CPU/memory; (3) partition: the backend's HTTP side goes down for ``--outage`` s while
systems keep writing and the central writer writes through SQL; then the backend comes
back and we measure the time until every local row is on the server and every central task
is in its system's database (convergence).

Per N and transport the figures include central -> system p50/p95/p99 and the server's CPU
(devserver + PostgreSQL) per change that crossed it (local pushes + central writes).

Run:  .venv/bin/python -m bench.scale --systems 10,25,50 [--json out.json]
      .venv/bin/python -m bench.scale --systems 200 --transports broadcast,postgres_changes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _pw(system: str) -> str:
    return f"pw-{system}-bench"


# ------------------------------------------------------------------------ backend process


def _backend_main(conn: Connection, data_dir: str) -> None:
    from tablesync.devserver.server import DevServer
    from tablesync.project import load_project
    from tablesync.sql import postgres

    srv = DevServer(data_dir=data_dir)
    info = srv.start()
    project = load_project(ROOT / "sync.toml")
    import psycopg

    with psycopg.connect(info.dsn, autocommit=True) as c:
        c.execute(postgres.schema_sql(project.tables, project.ddl).encode())
    conn.send({"url": info.url, "anon_key": info.anon_key, "service_key": info.service_key,
               "dsn": info.dsn, "pid": os.getpid()})
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            srv.stop(keep_postgres=True)
        elif cmd == "start":
            srv.start()
        elif cmd == "quit":
            srv.cleanup()
            conn.send("bye")
            return
        conn.send("ok")


# ------------------------------------------------------------------------ engine workers


def _config(tmp: Path, info: dict[str, Any], system: str, transport: str) -> Path:
    tables = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
    cfg = tmp / f"{system}.toml"
    cfg.write_text(
        f'[system]\nid = "{system}"\ndatabase = "{tmp / system}.db"\n'
        f'[supabase]\nurl = "{info["url"]}"\nanon_key = "{info["anon_key"]}"\n'
        f'email = "{system}@example.com"\n'
        # default settings (as `tablesync run` runs them) except the transport under test
        f'[sync]\nrealtime_transport = "{transport}"\n'
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp / system}-auth.json"\n'
        f'conflict_log = "{tmp / system}-conflicts.log"\n[tables.projects]' + tables)
    return cfg


def _worker_main(conn: Connection, info: dict[str, Any], systems: list[str], tmp: str,
                 transport: str) -> None:
    import logging

    logging.getLogger("tablesync").setLevel(logging.ERROR)   # reconnect warnings: expected
    from tablesync.daemon import build_engine
    from tablesync.project import load_project
    from tablesync.vault import Secret

    base = Path(tmp)
    engines, apps = {}, {}
    arrivals: dict[str, float] = {}
    lock = threading.Lock()
    for s in systems:
        e = build_engine(load_project(_config(base, info, s, transport)), password=Secret(_pw(s)))

        def arrived(ch: Any) -> None:
            if ch.record_id.startswith("c-"):
                with lock:
                    arrivals.setdefault(ch.record_id, time.time())
        e.on("tasks", arrived)
        engines[s] = e
        apps[s] = sqlite3.connect(base / f"{s}.db", isolation_level=None, timeout=30,
                                  check_same_thread=False)
    for e in engines.values():
        e.start()
    conn.send("started")
    seq = 0
    while True:
        cmd, arg = conn.recv()
        if cmd == "connected":
            conn.send(sum(e.status.state == "connected" and e.status.realtime
                          for e in engines.values()))
        elif cmd == "write":                        # arg = (duration s, rows/s per system)
            duration, rate = arg
            t_end, n = time.monotonic() + duration, 0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                for s, app in apps.items():
                    app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'l')",
                                (f"l-{s}-{seq}", s))
                    n += 1
                seq += 1
                time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - t0)))
            conn.send(n)
        elif cmd == "local_counts":                # arg = list of central ids expected here
            have = 0
            for s, app in apps.items():
                have += app.execute("SELECT count(*) FROM tasks WHERE id LIKE 'c-%'").fetchone()[0]
            depth = sum(e.store.stats().depth for e in engines.values())
            conn.send((have, depth))
        elif cmd == "arrivals":
            with lock:
                conn.send(dict(arrivals))
        elif cmd == "quit":
            for e in engines.values():
                e.close()
            conn.send("bye")
            return


# ------------------------------------------------------------------------ /proc sampling


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _stat(pid: int) -> tuple[float, float]:
    """(cpu seconds incl. reaped children, rss bytes)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(x) for x in fields[11:15]) / TICK        # utime stime cutime cstime
    return cpu, int(fields[21]) * PAGE


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _stat(pid)[1]


def _postmaster(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    with open(f"/proc/{backend}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class Probe:
    """CPU seconds and memory of the devserver process and the PostgreSQL cluster."""

    def __init__(self, devserver_pid: int, postmaster: int) -> None:
        self.dev, self.pm = devserver_pid, postmaster

    def sample(self) -> dict[str, float]:
        dev_cpu, dev_rss = _stat(self.dev)
        pg_cpu, pg_mem = _stat(self.pm)[0], _pss(self.pm)
        for child in _children(self.pm):
            try:
                pg_cpu += _stat(child)[0]
                pg_mem += _pss(child)
            except OSError:
                pass
        return {"t": time.monotonic(), "dev_cpu": dev_cpu, "dev_rss": dev_rss,
                "pg_cpu": pg_cpu, "pg_pss": pg_mem}


# ------------------------------------------------------------------------ one run


def _ask(workers: list[Connection], cmd: str, arg: Any = None) -> list[Any]:
    for w in workers:
        w.send((cmd, arg))
    return [w.recv() for w in workers]


def run_one(n: int, args: argparse.Namespace, transport: str) -> dict[str, Any]:
    import httpx
    import psycopg

    from tablesync.remote.rest import RestRemote
    from tablesync.vault import Secret

    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix=f"tablesync-scale-{n}-"))
    back, child = ctx.Pipe()
    backend = ctx.Process(target=_backend_main, args=(child, str(tmp / "server")), daemon=True)
    backend.start()
    info = back.recv()
    probe = Probe(info["pid"], _postmaster(info["dsn"]))
    systems = [f"sys-{i:03d}" for i in range(n)]
    with RestRemote(info["url"], info["anon_key"]) as admin:
        for s in systems:
            admin.admin_create_user(Secret(info["service_key"]), f"{s}@example.com",
                                    Secret(_pw(s)), {"system_id": s})
    procs, workers = [], []
    for w in range(args.workers):
        mine = systems[w::args.workers]
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker_main, args=(b, info, mine, str(tmp), transport),
                        daemon=True)
        p.start()
        procs.append(p)
        workers.append(a)
    for w in workers:
        assert w.recv() == "started"
    t0 = time.monotonic()
    while sum(_ask(workers, "connected")) < n:
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"N={n}: engines did not all connect in 120 s")
        time.sleep(0.5)
    connect_s = time.monotonic() - t0
    idle = probe.sample()
    time.sleep(3)
    idle2 = probe.sample()

    http = httpx.Client(base_url=info["url"], timeout=30, headers={
        "apikey": info["service_key"], "Authorization": f"Bearer {info['service_key']}",
        "Content-Type": "application/json", "Prefer": "return=minimal"})
    sent: dict[str, float] = {}
    stop_writer = threading.Event()
    rng = random.Random(n)

    def central(via_sql: bool = False) -> None:
        i = len(sent)
        interval = 1.0 / args.central_rate
        while not stop_writer.is_set():
            t = time.monotonic()
            s = rng.choice(systems)
            rid = f"c-{i}"
            if via_sql:
                with psycopg.connect(info["dsn"], autocommit=True) as c:
                    c.execute("INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, 'c')",
                              (rid, s))
            else:
                r = http.post("/rest/v1/tasks", json={"id": rid, "system_id": s, "title": "c"})
                r.raise_for_status()
            sent[rid] = time.time()
            i += 1
            stop_writer.wait(max(0.0, interval - (time.monotonic() - t)))

    # -- load phase
    writer = threading.Thread(target=central)
    before = probe.sample()
    hosts_before = sum(_stat(p.pid)[0] for p in procs)
    writer.start()
    written = sum(_ask(workers, "write", (args.duration, args.rate)))
    stop_writer.set()
    writer.join()
    t_load = time.monotonic()
    server_rows = lambda: psycopg.connect(info["dsn"], autocommit=True).execute(  # noqa: E731
        "SELECT count(*) FROM tasks WHERE id LIKE 'l-%'").fetchone()[0]
    while server_rows() < written and time.monotonic() - t_load < 60:
        time.sleep(0.2)
    drained_s = time.monotonic() - t_load
    after = probe.sample()
    hosts_cpu = sum(_stat(p.pid)[0] for p in procs) - hosts_before
    time.sleep(2)
    arrivals: dict[str, float] = {}
    for part in _ask(workers, "arrivals"):
        arrivals.update(part)
    lat = sorted(arrivals[k] - sent[k] for k in sent if k in arrivals)
    wall = after["t"] - before["t"]
    load = {
        "local_rows": written, "push_rows_per_s": written / wall,
        "central_tasks": len(sent), "central_delivered": len(lat),
        "central_tasks_per_s": len(sent) / wall,
        "engine_hosts_cpu_pct": 100 * hosts_cpu / wall,
        "central_latency_p50_ms": 1000 * statistics.median(lat) if lat else None,
        "central_latency_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))] if lat else None,
        "central_latency_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
        # server CPU (devserver + PostgreSQL) per change that crossed it (local + central)
        "server_cpu_ms_per_change": 1000 * (after["dev_cpu"] - before["dev_cpu"]
                                            + after["pg_cpu"] - before["pg_cpu"])
        / max(1, written + len(sent)),
        "drain_after_load_s": drained_s,
        "devserver_cpu_pct": 100 * (after["dev_cpu"] - before["dev_cpu"]) / wall,
        "postgres_cpu_pct": 100 * (after["pg_cpu"] - before["pg_cpu"]) / wall,
        "devserver_rss_mb": after["dev_rss"] / 2**20, "postgres_pss_mb": after["pg_pss"] / 2**20,
    }
    idle_stats = {
        "connect_all_s": connect_s,
        "idle_devserver_cpu_pct": 100 * (idle2["dev_cpu"] - idle["dev_cpu"]) / (idle2["t"] - idle["t"]),
        "idle_postgres_cpu_pct": 100 * (idle2["pg_cpu"] - idle["pg_cpu"]) / (idle2["t"] - idle["t"]),
        "idle_devserver_rss_mb": idle["dev_rss"] / 2**20, "idle_postgres_pss_mb": idle["pg_pss"] / 2**20,
    }

    # -- partition: the backend's HTTP side goes away, everybody keeps writing
    back.send("stop")
    back.recv()
    stop_writer.clear()
    writer = threading.Thread(target=central, kwargs={"via_sql": True})
    writer.start()
    written += sum(_ask(workers, "write", (args.outage, args.rate)))
    stop_writer.set()
    writer.join()
    back.send("start")
    back.recv()
    t_heal = time.monotonic()
    total_central = len(sent)
    converged = None
    while time.monotonic() - t_heal < args.converge_timeout:
        have = _ask(workers, "local_counts")
        if (sum(h for h, _ in have) == total_central and sum(d for _, d in have) == 0
                and server_rows() == written):
            converged = time.monotonic() - t_heal
            break
        time.sleep(0.2)
    http.close()
    _ask(workers, "quit")
    for p in procs:
        p.join(30)
    back.send("quit")
    back.recv()
    backend.join(30)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"systems": n, "transport": transport, **idle_stats, **load, "outage_s": args.outage,
            "outage_backlog_rows": int(args.outage * args.rate) * n,
            "convergence_after_heal_s": converged}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="10,25,50")
    ap.add_argument("--workers", type=int, default=2, help="engine host processes")
    ap.add_argument("--duration", type=float, default=15.0, help="load phase, seconds")
    ap.add_argument("--rate", type=float, default=1.0, help="local inserts/s per system")
    ap.add_argument("--central-rate", type=float, default=10.0, help="central tasks/s in total")
    ap.add_argument("--outage", type=float, default=5.0, help="backend down, seconds")
    ap.add_argument("--converge-timeout", type=float, default=120.0)
    ap.add_argument("--transports", default="broadcast,postgres_changes",
                    help="realtime_transport values to run, each with every N")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    results = []
    for n in (int(x) for x in args.systems.split(",")):
        for transport in args.transports.split(","):
            r = run_one(n, args, transport)
            results.append(r)
            print(json.dumps(r), flush=True)
    keys = ["systems", "transport", "connect_all_s", "push_rows_per_s", "central_latency_p50_ms",
            "central_latency_p95_ms", "central_latency_p99_ms", "server_cpu_ms_per_change", "central_tasks_per_s", "convergence_after_heal_s",
            "engine_hosts_cpu_pct", "idle_devserver_cpu_pct",
            "idle_postgres_cpu_pct", "devserver_cpu_pct", "postgres_cpu_pct",
            "devserver_rss_mb", "postgres_pss_mb"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in results:
        print("| " + " | ".join("-" if r[k] is None else f"{r[k]:.1f}" if isinstance(r[k], float)
                                else str(r[k]) for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
