"""Push in real operation (issue 14 item 4): ``tablesync run`` as users run it.

Per mode, a fresh project directory and SQLite file; the engine is the real CLI process
(``python -m tablesync run``), default settings (batch size, debounce, poll interval,
Realtime transport) except the one switch under test:

* ``realtime on``: ``[sync] realtime = true`` (the default): the engine holds its Realtime
  subscription while it pushes, so whatever the server sends back to it costs it time;
* ``realtime off``: ``[sync] realtime = false``: the same engine, catch-up polling only.

Each mode: start ``tablesync run``, wait for ``state: connected`` (Realtime joined when on),
then the app commits N inserts in one SQLite transaction and the clock runs from that
commit until PostgreSQL holds all N rows (polled every 20 ms with psycopg). The figure is
N / that time. The baseline in the same run is the backend's own REST bulk upsert of the same
rows at the same batch size (see ``bench.sync.rest_upsert``).

Run:  .venv/bin/python -m bench.push_live [--rows 50000] [--json out.json]
      (also ``python -m bench.sync --only push_live``)
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tablesync.config import SyncSettings
from tablesync.devserver.server import DevServerInfo

from bench.sync import ROOT, TABLES, PURGE, Backend, pg, rest_upsert, setup

SYSTEM = "system-a"
DEFAULT_BATCH = SyncSettings().batch_size


def write_config(tmp: Path, info: DevServerInfo, realtime: bool,
                 transport: str | None = None) -> Path:
    """A project like a user's: default ``[sync]`` except the Realtime switch (and the
    transport, for the ``postgres_changes`` comparison)."""
    cfg = tmp / "sync.toml"
    cfg.write_text(
        f'[system]\nid = "{SYSTEM}"\ndatabase = "{tmp / "app.db"}"\n'
        f'[supabase]\nurl = "{info.url}"\nanon_key = "{info.anon_key}"\n'
        f'email = "{SYSTEM}@example.com"\n'
        f'[sync]\nrealtime = {"true" if realtime else "false"}\n'
        + (f'realtime_transport = "{transport}"\n' if transport else "") +
        f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{tmp / "auth.json"}"\n'
        f'conflict_log = "{tmp / "conflicts.log"}"\n[tables.projects]' + TABLES)
    return cfg


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    return subprocess.run([sys.executable, "-m", "tablesync", *args], input=stdin, text=True,
                          capture_output=True, env=env, check=True, timeout=120)


class Running:
    """``tablesync run`` in a child process; its output lines are kept."""

    def __init__(self, cfg: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config",
                                      str(cfg)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.connected = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("state: connected"):
                self.connected.set()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


def insert_rows(db: Path, n: int, prefix: str) -> float:
    """The app's write: N inserts in one transaction; returns the commit time."""
    app = sqlite3.connect(db, isolation_level=None, timeout=60)
    app.execute("BEGIN")
    app.executemany("INSERT INTO tasks (id, system_id, title, priority, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((f"{prefix}{i}", SYSTEM, f"task {i}", i % 5, "x" * 40) for i in range(n)))
    app.execute("COMMIT")
    t = time.perf_counter()
    app.close()
    return t


def server_count(info: DevServerInfo, prefix: str) -> int:
    (count,) = pg(info, "SELECT count(*) FROM tasks WHERE id LIKE %s", prefix + "%")[0]
    return int(count)


def one_mode(info: DevServerInfo, root: Path, n: int, realtime: bool,
             timeout: float, transport: str | None = None) -> dict[str, Any]:
    mode = ("on" if realtime else "off") + (f"-{transport}" if transport else "")
    tmp = root / f"realtime-{mode}"
    tmp.mkdir()
    cfg = write_config(tmp, info, realtime, transport)
    cli("login", "--config", str(cfg), stdin=f"pw-{SYSTEM}\n")
    run = Running(cfg)
    try:
        if not run.connected.wait(60):
            raise SystemExit(f"realtime {mode}: engine never connected:\n" + "\n".join(run.lines))
        prefix = f"live-{mode.replace('_', '-')}-"
        t0 = insert_rows(tmp / "app.db", n, prefix)
        first: float | None = None
        deadline = t0 + timeout
        count = 0
        while time.perf_counter() < deadline:
            count = server_count(info, prefix)
            now = time.perf_counter()
            if count and first is None:
                first = now
            if count >= n:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        if count < n:
            raise SystemExit(f"realtime {mode}: {count} of {n} rows after {timeout:.0f} s\n"
                             + "\n".join(run.lines[-20:]))
    finally:
        run.stop()
    return {"rows": n, "seconds": wall, "rows_per_s": n / wall,
            "first_row_s": (first - t0) if first else None,
            "engine_output_tail": run.lines[-5:]}


def baseline(info: DevServerInfo, n: int, batch: int) -> dict[str, Any]:
    """REST bulk upsert of the same rows at the same batch size, signed in as the system."""
    import httpx

    r = httpx.post(f"{info.url}/auth/v1/token?grant_type=password",
                   headers={"apikey": info.anon_key},
                   json={"email": f"{SYSTEM}@example.com", "password": f"pw-{SYSTEM}"})
    r.raise_for_status()
    token = r.json()["access_token"]
    rows = [{"id": f"base-{i}", "system_id": SYSTEM, "title": f"task {i}", "priority": i % 5,
             "payload": "x" * 40, "_ts_hlc": 1 << 20 | i, "_ts_origin": SYSTEM}
            for i in range(n)]
    seconds = rest_upsert(info, token, rows, batch)
    return {"rows": n, "batch": batch, "seconds": seconds, "rows_per_s": n / seconds}


def bench_push_live(info: DevServerInfo, n: int, timeout: float = 600.0) -> dict[str, Any]:
    """Realtime on (default transport), Realtime off, Realtime on with the
    ``postgres_changes`` transport (the echo's cost), then the REST baseline; same backend."""
    res: dict[str, Any] = {"batch": DEFAULT_BATCH}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as d:
        root = Path(d)
        for key, realtime, transport in (("realtime_on", True, None),
                                         ("realtime_off", False, None),
                                         ("postgres_changes", True, "postgres_changes")):
            res[key] = one_mode(info, root, n, realtime, timeout, transport)
            print(key, json.dumps({k: v for k, v in res[key].items()
                                   if k != "engine_output_tail"}), flush=True)
            pg(info, PURGE)
            pg(info, "VACUUM ANALYZE tasks")
    res["baseline"] = baseline(info, n, DEFAULT_BATCH)
    pg(info, PURGE)
    res["on_vs_off"] = res["realtime_on"]["rows_per_s"] / res["realtime_off"]["rows_per_s"]
    res["postgres_changes_vs_off"] = (res["postgres_changes"]["rows_per_s"]
                                      / res["realtime_off"]["rows_per_s"])
    return res


def table(res: dict[str, Any]) -> str:
    on, off, base = res["realtime_on"], res["realtime_off"], res["baseline"]
    return "\n".join([
        "| `tablesync run`, default settings | rows/s | vs Realtime off | vs REST bulk upsert |",
        "| --- | ---: | ---: | ---: |",
        f"| Realtime on ({on['rows']:,} rows) | {on['rows_per_s']:,.0f} | "
        f"{res['on_vs_off']:.2f}x | {on['rows_per_s'] / base['rows_per_s']:.2f}x |",
        f"| Realtime off ({off['rows']:,} rows) | {off['rows_per_s']:,.0f} | 1.00x | "
        f"{off['rows_per_s'] / base['rows_per_s']:.2f}x |",
        f"| Realtime on, `realtime_transport = \"postgres_changes\"` (echo) | "
        f"{res['postgres_changes']['rows_per_s']:,.0f} | {res['postgres_changes_vs_off']:.2f}x | "
        f"{res['postgres_changes']['rows_per_s'] / base['rows_per_s']:.2f}x |",
        f"| baseline: REST bulk upsert, batch {base['batch']} | {base['rows_per_s']:,.0f} | | "
        f"1.00x |"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.push_live",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    backend = Backend()
    try:
        info = setup(backend.info)
        res = bench_push_live(info, args.rows)
    finally:
        backend.stop()
    res["load_after"] = os.getloadavg()
    print()
    print(table(res))
    print(f"\nload average after: {res['load_after'][0]:.1f} ({os.cpu_count()} CPUs)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
