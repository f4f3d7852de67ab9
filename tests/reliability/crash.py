"""Crash-safety rig: a real engine process SIGKILLed in push, pull and apply, and an oracle.

Used by ``tests/reliability/test_crash.py`` (a few kills) and ``python -m bench.crash``
(at least 50). Everything is real and on loopback: PostgreSQL, the devserver, the fault
proxy (delay mode widens the windows), the engine as a child process
(``crash_runner.py`` = ``tablesync run`` plus phase markers), an application writing to
the SQLite file with plain sqlite3, and a "dashboard" writing to PostgreSQL directly.

Every write is recorded with its version: local writes compute, in their own transaction,
the HLC the engine will stamp on the ``sync_queue`` entry their trigger created
(``tablesync.stamp.chain`` over the unstamped tail), and ``Oracle.resolve`` checks the
engine stamped exactly that on every entry still in the queue; server writes use
``RETURNING _ts_hlc, _ts_origin, _ts_deleted``. The oracle says, for every row, which write
must survive: the greatest under the LWW order. ``verify()`` then checks the server and the
replica against it, and checks the server's audit trail (a trigger added for the test
records every version PostgreSQL actually stored): per row the stored versions strictly
increase, so no write was applied twice and nothing older overwrote something newer.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors

from faults.proxy import FaultProxy
from tablesync.devserver.server import DevServer
from tablesync.project import load_project
from tablesync.remote.rest import RestRemote
from tablesync.sql import postgres
from tablesync.stamp import WALL_MS_SQL, chain as stamp_chain
from tablesync.store import LocalStore
from tablesync.vault import Secret

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("crash_runner.py")
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]
SYSTEM = "system-a"
EMAIL = f"{SYSTEM}@example.com"
PASSWORD = "pw-crash-system-a"
SEED_TASKS = 1500
SEED_RESULTS = 50
PHASES = ("push", "pull", "apply")
# How long after the phase opened the kill may land (seconds, uniform).
WINDOWS = {"push": 0.25, "pull": 0.6, "apply": 0.015}

AUDIT_SQL = """
CREATE TABLE public.crash_audit (n bigserial PRIMARY KEY, tbl text NOT NULL, id text NOT NULL,
  hlc bigint NOT NULL, origin text NOT NULL, deleted boolean NOT NULL);
CREATE FUNCTION public.crash_audit_fn() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = public AS $$
BEGIN
  INSERT INTO public.crash_audit (tbl, id, hlc, origin, deleted)
    VALUES (TG_TABLE_NAME, NEW.id, NEW._ts_hlc, NEW._ts_origin, NEW._ts_deleted);
  RETURN NULL;
END $$;
CREATE TRIGGER crash_audit AFTER INSERT OR UPDATE ON public.tasks
  FOR EACH ROW EXECUTE FUNCTION public.crash_audit_fn();
CREATE TRIGGER crash_audit AFTER INSERT OR UPDATE ON public.results
  FOR EACH ROW EXECUTE FUNCTION public.crash_audit_fn();
"""

Key = tuple[int, str, int]          # (hlc, origin, deleted): the LWW order of our writes


@dataclass(frozen=True)
class Write:
    table: str
    id: str
    key: Key
    value: str | None               # title / output; None for a delete
    qid: int | None = None          # app writes: the sync_queue entry, stamped later


class Oracle:
    """Every write made by the app and the dashboard; which one must win per row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes: list[Write] = []

    def add(self, w: Write) -> None:
        with self._lock:
            self.writes.append(w)

    def resolve(self, db: Path) -> None:
        """The engine stamped every app write's entry with the version predicted for it."""
        conn = sqlite3.connect(db, timeout=60)
        try:
            stamps = dict(conn.execute("SELECT id, hlc FROM sync_queue"))
        finally:
            conn.close()
        with self._lock:
            for w in self.writes:        # entries superseded by a remote row are gone
                if w.qid is not None and w.qid in stamps:
                    assert stamps[w.qid] == w.key[0], (
                        f"{w.table} {w.id}: queue entry {w.qid} stamped {stamps[w.qid]}, "
                        f"predicted {w.key[0]} at write time")

    def winners(self) -> dict[tuple[str, str], Write]:
        out: dict[tuple[str, str], Write] = {}
        with self._lock:
            for w in self.writes:
                cur = out.get((w.table, w.id))
                if cur is None or w.key > cur.key:
                    out[(w.table, w.id)] = w
        return out

    def count(self, origin: str) -> int:
        with self._lock:
            return sum(w.key[1] == origin for w in self.writes)


def _predicted_stamp(conn: sqlite3.Connection) -> int:
    """The HLC the store will stamp on the newest queue entry (inside the write's tx)."""
    sid, last = conn.execute("SELECT stamped_id, hlc FROM _tablesync_stamp").fetchone()
    (observed,) = conn.execute("SELECT hlc FROM _tablesync_state").fetchone()
    walls = [int(w) for (w,) in conn.execute(
        f"SELECT {WALL_MS_SQL} FROM sync_queue WHERE id > ? ORDER BY id", (sid,))]
    return stamp_chain(max(int(observed), int(last)), walls)[-1]


class _Loop(threading.Thread):
    """A stoppable background writer (bounded: stops on ``stop`` or after ``limit`` s)."""

    def __init__(self, name: str, period: float, limit: float = 3600.0) -> None:
        super().__init__(name=name, daemon=True)
        self.period, self.limit = period, limit
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        try:
            while not self.halt.is_set() and time.monotonic() < deadline:
                self.step()
                self.halt.wait(self.period)
        except BaseException as exc:  # noqa: BLE001 - reported by the rig
            self.error = exc
        finally:
            self.close()

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


class AppWriter(_Loop):
    """The application: plain sqlite3 writes to the replica (the engine may be dead)."""

    def __init__(self, db: Path, oracle: Oracle, rng: random.Random, period: float) -> None:
        super().__init__("app-writer", period)
        self.conn = sqlite3.connect(db, isolation_level=None, timeout=60,
                                    check_same_thread=False)
        self.oracle, self.rng = oracle, rng
        self.n = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def step(self) -> None:
        self.write()

    def burst(self, n: int) -> None:
        for _ in range(n):
            self.write()

    def write(self) -> None:
        with self._lock:
            self.n += 1
            r = self.rng.random()
            value = f"a:{self.n}"
            if r < 0.55:
                rid = f"t{self.rng.randrange(SEED_TASKS):04d}"
                self._do("tasks", rid, value, "UPDATE tasks SET title = ? WHERE id = ?",
                         (value, rid))
            elif r < 0.7:
                rid = f"a{self.n}"
                self._do("tasks", rid, value, "INSERT INTO tasks (id, system_id, title) "
                         "VALUES (?, ?, ?)", (rid, SYSTEM, value))
            elif r < 0.9:
                rid = f"r{self.rng.randrange(SEED_RESULTS):03d}"
                self._do("results", rid, value,
                         "INSERT INTO results (id, system_id, task_id, output) VALUES "
                         "(?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET output = excluded.output",
                         (rid, SYSTEM, f"t{int(rid[1:]):04d}", value))
            else:
                rid = f"r{self.rng.randrange(SEED_RESULTS):03d}"
                self._do("results", rid, None, "DELETE FROM results WHERE id = ?", (rid,))

    def _do(self, table: str, rid: str, value: str | None, sql: str,
            args: tuple[Any, ...]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            changed = conn.execute(sql, args).rowcount
            qid = hlc = None
            if changed:
                row = conn.execute("SELECT id, record_id FROM sync_queue "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
                assert row[1] == rid, f"queue entry for {row[1]}, wrote {rid}"
                qid, hlc = int(row[0]), _predicted_stamp(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if qid is not None and hlc is not None:
            self.oracle.add(Write(table, rid, (hlc, SYSTEM, int(value is None)), value, qid))


class ServerWriter(_Loop):
    """The dashboard: direct PostgreSQL writes (stamped by the server's trigger)."""

    def __init__(self, dsn: str, oracle: Oracle, rng: random.Random, period: float) -> None:
        super().__init__("server-writer", period)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.oracle, self.rng = oracle, rng
        self.n = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def step(self) -> None:
        with self._lock:
            self.n += 1
            value, r = f"s:{self.n}", self.rng.random()
            if r < 0.6:
                rid = f"t{self.rng.randrange(SEED_TASKS):04d}"
                self._one("tasks", "UPDATE tasks SET title = %s WHERE id = %s "
                          "RETURNING id, title, _ts_hlc, _ts_origin, _ts_deleted", (value, rid))
            elif r < 0.8:
                self._one("tasks", "INSERT INTO tasks (id, system_id, title) VALUES "
                          "(%s, %s, %s) RETURNING id, title, _ts_hlc, _ts_origin, _ts_deleted",
                          (f"s{self.n}", SYSTEM, value))
            else:
                rid = f"r{self.rng.randrange(SEED_RESULTS):03d}"
                self._one("results", "UPDATE results SET output = %s WHERE id = %s "
                          "RETURNING id, output, _ts_hlc, _ts_origin, _ts_deleted",
                          (value, rid))

    def bulk(self) -> int:
        """Rewrite every seeded task at once (a big catch-up / Realtime burst)."""
        with self._lock:
            self.n += 1
            return self._one("tasks", "UPDATE tasks SET title = %s || id WHERE id LIKE "
                             "'t%%' RETURNING id, title, _ts_hlc, _ts_origin, _ts_deleted",
                             (f"sb:{self.n}:",))

    def _one(self, table: str, sql: str, args: tuple[Any, ...]) -> int:
        for attempt in range(10):           # a bulk UPDATE may deadlock with a push: retry
            try:
                rows = self.conn.execute(sql, args).fetchall()
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 9:
                    raise
                time.sleep(0.05)
        for rid, value, hlc, origin, deleted in rows:
            self.oracle.add(Write(table, rid, (int(hlc), origin, int(deleted)),
                                  None if deleted else value))
        return len(rows)


@dataclass
class KillRecord:
    target: str
    phases: frozenset[str]
    delay: float
    uptime: float


@dataclass
class CrashReport:
    kills: list[KillRecord] = field(default_factory=list)
    integrity_checks: int = 0
    app_writes: int = 0
    server_writes: int = 0
    rows: int = 0
    converge_s: float = 0.0
    duration_s: float = 0.0
    audit_versions: int = 0
    restarts: int = 0

    def phase_counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for k in self.kills:
            for p in k.phases or {"idle"}:
                c[p] += 1
        return c

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.phase_counts().items()))
        return (f"{len(self.kills)} SIGKILLs (open phases at the kill: {counts}); "
                f"{self.integrity_checks} integrity checks ok; {self.app_writes} app writes, "
                f"{self.server_writes} dashboard writes on {self.rows} rows; "
                f"{self.audit_versions} server versions audited; converged "
                f"{self.converge_s:.1f} s after the last restart; total {self.duration_s:.0f} s")


class Marks:
    """Follows the runner's marks file: which phases are open right now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.open: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()

    def poll(self) -> frozenset[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return frozenset()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            if line.startswith("=run"):
                self.open.clear()
            elif line.startswith("+"):
                self.open[line[1:]] += 1
                self.seen[line[1:]] += 1
            elif line.startswith("-"):
                self.open[line[1:]] -= 1
        return frozenset(k for k, v in self.open.items() if v > 0)


class CrashRig:
    """Backend + proxy + engine process + writers, for one crash run."""

    def __init__(self, tmp: Path, dsn: str, *, seed: int = 0, app_period: float = 0.015,
                 server_period: float = 0.04, log: Any = None) -> None:
        self.tmp, self.dsn = tmp, dsn
        self.rng = random.Random(seed)
        self.oracle = Oracle()
        self.report = CrashReport()
        self.log = log or (lambda msg: None)
        self._periods = (app_period, server_period)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.marks = Marks(tmp / "marks.log")
        self.server: DevServer | None = None
        self.proxy: FaultProxy | None = None
        self.app: AppWriter | None = None
        self.dash: ServerWriter | None = None

    # -- setup / teardown

    def setup(self) -> None:
        self.t0 = time.monotonic()
        project = load_project(ROOT / "sync.toml")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
            conn.execute(AUDIT_SQL.encode())
        self.server = DevServer(dsn=self.dsn)
        info = self.server.start()
        with RestRemote(info.url, info.anon_key) as admin:
            admin.admin_create_user(Secret(info.service_key), EMAIL, Secret(PASSWORD),
                                    {"system_id": SYSTEM})
        self.proxy = FaultProxy("127.0.0.1", int(info.url.rsplit(":", 1)[1]))
        self.proxy.start()
        self.config = self._write_config(info.anon_key)
        self.project = load_project(self.config)
        LocalStore.open(self.project).close()          # create + migrate the replica
        self.db = self.project.config.database_path
        self.dash = ServerWriter(self.dsn, self.oracle, random.Random(self.rng.random()),
                                 self._periods[1])
        with self.dash._lock:
            for i in range(0, SEED_TASKS, 500):
                self.dash._one("tasks", "INSERT INTO tasks (id, system_id, title) "
                               "SELECT 't' || lpad(g::text, 4, '0'), %s, 'seed' FROM "
                               "generate_series(%s::int, %s::int) g RETURNING id, title, _ts_hlc, "
                               "_ts_origin, _ts_deleted", (SYSTEM, i, i + 499))
            self.dash._one("results", "INSERT INTO results (id, system_id, task_id, "
                           "output) SELECT 'r' || lpad(g::text, 3, '0'), %s, 't' || "
                           "lpad(g::text, 4, '0'), 'seed' FROM generate_series(0, %s::int) g "
                           "RETURNING id, output, _ts_hlc, _ts_origin, _ts_deleted",
                           (SYSTEM, SEED_RESULTS - 1))
        self.app = AppWriter(self.db, self.oracle, random.Random(self.rng.random()),
                             self._periods[0])

    def _write_config(self, anon_key: str) -> Path:
        assert self.proxy is not None
        t = self.tmp
        cfg = t / "crash.toml"
        cfg.write_text(
            f'[system]\nid = "{SYSTEM}"\ndatabase = "{t / "a.db"}"\n'
            f'[supabase]\nurl = "{self.proxy.url}"\nanon_key = "{anon_key}"\n'
            f'email = "{EMAIL}"\n'
            "[sync]\ninterval = 1.0\ndebounce = 0.02\npoll_interval = 2.0\nbatch_size = 50\n"
            f'[paths]\nschemas = "{ROOT / "schemas"}"\ntoken_store = "{t / "auth.json"}"\n'
            f'conflict_log = "{t / "conflicts.log"}"\n[tables.projects]' + TABLES)
        return cfg

    def close(self) -> None:
        for w in (self.app, self.dash):
            if w is not None and w.is_alive():
                w.halt.set()
                w.join(30)
        self._kill()
        if self.proxy is not None:
            self.proxy.stop()
        if self.server is not None:
            self.server.stop()

    # -- the engine process

    def start_engine(self) -> None:
        self.marks.poll()
        self.marks.open.clear()                         # the killed process's phases
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env["TABLESYNC_SUPABASE__PASSWORD"] = PASSWORD
        env["HOME"] = str(self.tmp)
        out = (self.tmp / "engine.out").open("ab")
        self.proc = subprocess.Popen([sys.executable, str(RUNNER), str(self.marks.path),
                                      str(self.config)], stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.tmp)
        out.close()
        self.started_at = time.monotonic()
        self.report.restarts += 1

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def stop_engine(self) -> int:
        """SIGTERM: the clean stop `tablesync run` does on Ctrl-C; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def wait_phase(self, phase: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if phase in self.marks.poll():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the engine exited by itself ({self.proc.returncode}); "
                                     f"see {self.tmp / 'engine.out'}")
            time.sleep(0.002)
        return False

    def kill_in(self, target: str, timeout: float = 20.0) -> KillRecord:
        """SIGKILL the engine a random moment after ``target`` opened; record what was open."""
        self.wait_phase(target, timeout)
        delay = self.rng.uniform(0, WINDOWS[target])
        time.sleep(delay)
        uptime = time.monotonic() - self.started_at
        self._kill()
        rec = KillRecord(target, self.marks.poll(), delay, uptime)
        self.report.kills.append(rec)
        self.check_integrity()
        return rec

    def _one_kill(self, target: str, planned: int) -> None:
        assert self.app is not None and self.dash is not None and self.proxy is not None
        self.proxy.set_mode("delay", delay_ms=self.rng.choice((5.0, 20.0, 40.0)))
        if target == "push":
            self.app.burst(self.rng.randrange(200, 600))
        else:
            self.dash.bulk()
        self.start_engine()
        rec = self.kill_in(target)
        self.log(f"kill {len(self.report.kills)}/{planned}: target {target}, "
                 f"open {sorted(rec.phases)}, {rec.delay * 1000:.0f} ms after it opened, "
                 f"uptime {rec.uptime:.2f} s")

    def check_integrity(self) -> None:
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert result == [("ok",)], f"integrity_check after kill {len(self.report.kills)}: {result}"
        self.report.integrity_checks += 1

    # -- one crash run

    def run(self, kills: int) -> CrashReport:
        assert self.app is not None and self.dash is not None and self.proxy is not None
        self.app.start()
        self.dash.start()
        plan = [PHASES[i % len(PHASES)] for i in range(kills)]
        # A kill can miss its phase (it closed before the random delay ran out, more
        # often on a loaded machine): aim extra kills, at most ``2 * kills`` more, at any
        # phase no kill has landed in yet, so every phase is really exercised.
        extra = 2 * kills
        while plan:
            target = plan.pop(0)
            self._one_kill(target, kills)
            if not plan and extra > 0:
                hit = self.report.phase_counts()
                missed = [p for p in PHASES if hit[p] == 0]
                plan, extra = missed[:extra], extra - len(missed[:extra])
        self.app.stop()
        self.dash.stop()
        self.proxy.mode = "pass"
        self.start_engine()
        t0 = time.monotonic()
        self.converge()
        self.report.converge_s = time.monotonic() - t0
        code = self.stop_engine()
        assert code == 0, f"`tablesync run` exited {code} on SIGTERM"
        self.verify()
        self.report.duration_s = time.monotonic() - self.t0
        return self.report

    # -- checks

    def converge(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            depth, parked = self._queue()
            if depth == 0 and parked == 0:
                diff = self._diff()
                if not diff:
                    return
                last = diff
            else:
                last = f"queue depth {depth}, parked {parked}"
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the engine died: see {self.tmp / 'engine.out'}")
            time.sleep(0.25)
        raise AssertionError(f"no convergence within {timeout:.0f} s: {last}")

    def _queue(self) -> tuple[int, int]:
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            (depth,) = conn.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL"
                                    ).fetchone()
            (parked,) = conn.execute("SELECT count(*) FROM _tablesync_parked").fetchone()
        finally:
            conn.close()
        return int(depth), int(parked)

    def server_rows(self) -> dict[tuple[str, str], tuple[Key, str | None]]:
        out = {}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table, col in (("tasks", "title"), ("results", "output")):
                for rid, value, hlc, origin, deleted in conn.execute(
                        f"SELECT id, {col}, _ts_hlc, _ts_origin, _ts_deleted FROM {table}"):
                    out[(table, rid)] = ((int(hlc), origin, int(deleted)),
                                         None if deleted else value)
        return out

    def local_rows(self) -> dict[tuple[str, str], tuple[Key, str | None]]:
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            meta = {(t, r): (int(h), o, int(d)) for t, r, h, o, d in conn.execute(
                "SELECT table_name, record_id, hlc, origin, deleted FROM _tablesync_meta")}
            out: dict[tuple[str, str], tuple[Key, str | None]] = {}
            for table, col in (("tasks", "title"), ("results", "output")):
                for rid, value in conn.execute(f"SELECT id, {col} FROM {table}"):
                    out[(table, rid)] = (meta.get((table, rid), (0, "", 0)), value)
            for k, v in meta.items():
                if v[2] and k not in out:
                    out[k] = (v, None)
        finally:
            conn.close()
        return out

    def _diff(self) -> str:
        server, local = self.server_rows(), self.local_rows()
        bad = [k for k in server.keys() | local.keys() if server.get(k) != local.get(k)]
        if not bad:
            return ""
        k = sorted(bad)[0]
        return f"{len(bad)} rows differ, e.g. {k}: server {server.get(k)}, local {local.get(k)}"

    def verify(self) -> None:
        """Nothing lost, nothing applied twice, server == replica == the LWW winners."""
        server, local = self.server_rows(), self.local_rows()
        self.oracle.resolve(self.db)
        winners = self.oracle.winners()
        lost = [(k, w) for k, w in winners.items()
                if server.get(k) != (w.key, w.value)]
        assert not lost, (f"{len(lost)} rows do not hold their LWW winner on the server, e.g. "
                          f"{lost[0][0]}: expected {lost[0][1]}, server {server.get(lost[0][0])}")
        extra = set(server) - set(winners)
        assert not extra, f"server rows nobody wrote: {sorted(extra)[:5]}"
        assert local == server, self._diff()
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
            ok = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert fk == [] and ok == [("ok",)], f"replica after convergence: {fk[:5]} {ok}"
        self.report.app_writes = self.oracle.count(SYSTEM)
        self.report.server_writes = self.oracle.count("server")
        self.report.rows = len(winners)
        self._verify_audit()

    def _verify_audit(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT tbl, id, hlc, origin, deleted FROM crash_audit "
                                "ORDER BY n").fetchall()
        last: dict[tuple[str, str], Key] = {}
        for tbl, rid, hlc, origin, deleted in rows:
            key = (int(hlc), origin, int(deleted))
            prev = last.get((tbl, rid))
            assert prev is None or key[:2] > prev[:2], (
                f"{tbl} {rid}: the server stored version {key} after {prev} "
                "(a write applied twice, or an older one over a newer)")
            last[(tbl, rid)] = key
        self.report.audit_versions = len(rows)
