"""One replica of a check run: the app's SQLite file, its LocalStore, its skewed clock.

The app writes through plain sqlite3 on its own connection, so the generated capture
triggers run as in the app; the replica's wall clock (``base + skew + ticks``) reaches
those triggers by overriding SQLite's ``julianday('now')`` on that connection. Syncing
is :class:`~tablesync.cycles.Cycles` (the engine's push and catch-up) over a
:class:`~tablesync.check.remote_pg.PgRemote`.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tablesync.config import Project
from tablesync.cycles import Cycles
from tablesync.machine import RunOutcome
from tablesync.metrics import Metrics
from tablesync.model import ZERO, TableSpec, Version
from tablesync.rows import row_from_state
from tablesync.sql.base import ident
from tablesync.store import LocalStore
from tablesync.check.remote_pg import PgRemote

__all__ = ["Replica", "WallClock"]

MAX_PUSH_RUNS = 200                         # push runs per sync (each drains up to ~1 s)


class WallClock:
    """A replica's wall clock in ms: ``base`` (the example's start) + skew + ticks."""

    def __init__(self, base_ms: int, skew_ms: int) -> None:
        self.base_ms, self.skew_ms, self.ticks = base_ms, skew_ms, 0

    def now_ms(self) -> int:
        return self.base_ms + self.skew_ms + self.ticks

    def julianday(self, arg: str) -> float:
        if arg != "now":
            raise ValueError("only julianday('now') is expected in the capture triggers")
        # a quarter millisecond in: round() and a truncating CAST both give back now_ms
        return (self.now_ms() + 0.25) / 86_400_000 + 2440587.5


class Replica:
    """System ``system_id``'s SQLite file in ``root``, synced through ``remote``."""

    def __init__(self, project: Project, root: Path, template: Path, remote: PgRemote,
                 clock: WallClock) -> None:
        self.project = project
        self.system_id = system_id = project.config.system.id
        root.mkdir(parents=True, exist_ok=True)
        db = root / f"{system_id}.db"
        # a copy of an empty database migrated once per run (migrating costs ~0.1 s)
        shutil.copyfile(template, db)
        self.specs = {t.name: t for t in project.tables}
        self.clock = clock
        conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False,
                               timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        self.store = LocalStore(conn, project, conflict_log=root / f"{system_id}.log",
                                max_retries=project.config.sync.max_retries)
        self.app = sqlite3.connect(str(db), isolation_level=None, timeout=30)
        self.app.create_function("julianday", 1, clock.julianday)
        self.remote = remote                # outlives the example (one connection per run)
        self.errors: list[str] = []
        self.cycles = self._cycles()

    @staticmethod
    def project_for(project: Project, system_id: str, template: Path) -> Project:
        """``project`` as system ``system_id``, and its empty migrated database at
        ``template``."""
        cfg = project.config
        system = cfg.system.model_copy(update={"id": system_id, "database": str(template)})
        mine = dataclasses.replace(project, config=cfg.model_copy(update={"system": system}))
        LocalStore.open(mine, template, conflict_log=template.with_suffix(".log")).close()
        return mine

    def _cycles(self) -> Cycles:
        c = Cycles(self.project, self.store, self.remote,
                   batch_size=self.project.config.sync.batch_size, metrics=Metrics(),
                   notify=lambda changes: None,
                   on_error=lambda message, cause: self.errors.append(message))
        c.wall = self.clock
        return c

    def close(self) -> None:
        self.app.close()
        self.store.close()

    # -- the app's reads and writes -----------------------------------------------------

    def rows(self, spec: TableSpec) -> list[dict[str, Any]]:
        """The app's live rows of ``spec``, ordered by key."""
        pk = ident(spec.primary_key, "sqlite")
        cur = self.app.execute(f"SELECT * FROM {ident(spec.name, 'sqlite')} ORDER BY {pk}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def held(self, table: str, rid: str) -> Version:
        """The version this copy holds: the last unacknowledged write, else the synced one."""
        q = self.app.execute("SELECT hlc FROM sync_queue WHERE synced_at IS NULL AND "
                             "table_name = ? AND record_id = ? ORDER BY id DESC LIMIT 1",
                             (table, rid)).fetchone()
        if q is not None and q[0] is not None:
            return Version(int(q[0]), self.system_id)
        m = self.app.execute("SELECT hlc, origin FROM _tablesync_meta WHERE table_name = ? "
                             "AND record_id = ?", (table, rid)).fetchone()
        return Version(int(m[0]), str(m[1])) if m else ZERO

    def stamped(self, table: str, rid: str) -> Version:
        """The version of this record's last local write (stamped as the engine would)."""
        self.store.stamp()
        q = self.app.execute("SELECT hlc FROM sync_queue WHERE table_name = ? AND "
                             "record_id = ? ORDER BY id DESC LIMIT 1", (table, rid)).fetchone()
        return Version(int(q[0]), self.system_id)

    def meta(self) -> dict[tuple[str, str], tuple[Version, bool]]:
        """Every record's synced version and deletion flag (``_tablesync_meta``)."""
        return {(t, rid): (Version(int(h), str(o)), bool(d)) for t, rid, h, o, d in
                self.app.execute("SELECT table_name, record_id, hlc, origin, deleted FROM "
                                 "_tablesync_meta")}

    # -- sync ---------------------------------------------------------------------------

    def sync(self) -> bool:
        """Push everything pending, then catch up (the engine's ``sync_once``); False
        when a step failed (offline, a refused batch: see ``errors``)."""
        ok = True
        for _ in range(MAX_PUSH_RUNS):
            res = self.cycles.push_batch(None)
            if res.outcome not in (RunOutcome.OK, RunOutcome.FORBIDDEN):
                ok = False
                break
            if not res.backlog:
                break
        pull = self.cycles.catch_up(None)
        return ok and pull.outcome is RunOutcome.OK

    def push_without_ack(self) -> int:
        """Send the first pending batch of one table; the server applies it but the
        answer is lost (the process died between the send and the ack). The replica
        restarts: its push state starts again from the queue."""
        pending = self.store.pending()
        sent = 0
        if pending:
            table = pending[0].table
            batch = [c for c in pending if c.table == table][:self.cycles.batch_size]
            try:
                self.remote.apply(table, [row_from_state(c.state) for c in batch])
                sent = len(batch)
            except Exception as exc:  # noqa: BLE001 - a failed send is a lost answer too
                self.errors.append(f"lost push {table}: {exc}")
        self.cycles = self._cycles()
        return sent
