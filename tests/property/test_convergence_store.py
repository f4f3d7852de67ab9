"""The convergence machine driving real ``tablesync.store.LocalStore`` replicas.

Same rules, invariants and final checks as tests/property/convergence.py, but each
replica is a SQLite file written by the app's path (plain sqlite3 through the generated
capture triggers) and synced by LocalStore (pending / ack / apply_remote / conflicts /
cursors). Skewed wall clocks reach the triggers by overriding SQLite's ``julianday('now')``
on the app's connection.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import convergence as base
from tablesync import project as project_mod
from tablesync import store as store_mod
from tablesync.clock import FakeClock
from tablesync.model import ZERO, Conflict, RowState, Version

pytestmark = pytest.mark.slow

SCHEMA = "CREATE TABLE {name} (id TEXT PRIMARY KEY, system_id TEXT NOT NULL, title TEXT);\n"
TOML = """
[system]
id = "{origin}"
database = "{db}"

[sync]
max_retries = 100

[paths]
schemas = "{schemas}"
conflict_log = "{log}"

[tables.tasks]
schema = "tasks.sql"
primary_key = "id"
scope = "system_id"
on_delete_conflict = "edit-wins"

[tables.notes]
schema = "notes.sql"
primary_key = "id"
scope = "system_id"
on_delete_conflict = "last-write-wins"
"""


def _skewed_julianday(wall: FakeClock) -> Any:
    def julianday(arg: str) -> float:
        if arg != "now":
            raise ValueError("only julianday('now') is expected in the capture triggers")
        # a quarter millisecond in, so that both round() and a truncating CAST of
        # (jd - 2440587.5) * 86400000 give back exactly now_ms despite float error
        return (wall.now_ms() + 0.25) / 86_400_000 + 2440587.5

    return julianday


def _state(j: dict[str, Any]) -> RowState:
    return RowState(Version(*j["version"]), j["deleted"], Version(*j["base"]), j["data"])


class StoreReplica:
    """Adapter: the machine's Replica protocol over one LocalStore + an app connection."""

    def __init__(self, origin: str, wall: FakeClock, root: Path) -> None:
        self.origin = origin
        d = root / origin
        (d / "schemas").mkdir(parents=True)
        for name in base.TABLES:
            (d / "schemas" / f"{name}.sql").write_text(SCHEMA.format(name=name))
        toml = d / "sync.toml"
        toml.write_text(TOML.format(origin=origin, db=d / "app.db", schemas=d / "schemas",
                                    log=d / "conflicts.log"))
        project = project_mod.load_project(toml)
        self.store = store_mod.LocalStore.open(project, d / "app.db")
        self.app = sqlite3.connect(d / "app.db", isolation_level=None)
        self.app.create_function("julianday", 1, _skewed_julianday(wall))

    def close(self) -> None:
        self.app.close()
        self.store.close()

    # -- the app's writes ------------------------------------------------------------------

    def _row(self, key: Key) -> dict[str, Any] | None:
        cur = self.app.execute(f'SELECT id, system_id, title FROM "{key[0]}" WHERE id = ?',
                               (key[1],))
        row = cur.fetchone()
        return dict(zip(("id", "system_id", "title"), row)) if row else None

    def _held(self, key: Key) -> Version:
        """The version the local copy holds: the last unacknowledged write, else meta."""
        q = self.app.execute("SELECT hlc FROM sync_queue WHERE synced_at IS NULL AND "
                             "table_name = ? AND record_id = ? ORDER BY id DESC LIMIT 1",
                             key).fetchone()
        if q is not None:
            return Version(int(q[0]), self.origin)
        m = self.app.execute("SELECT hlc, origin FROM _tablesync_meta WHERE table_name = ? "
                             "AND record_id = ?", key).fetchone()
        return Version(int(m[0]), str(m[1])) if m else ZERO

    def _stamped(self) -> int:
        self.store.stamp()   # what the engine does before it reads or applies anything
        return int(self.app.execute("SELECT hlc FROM sync_queue ORDER BY id DESC LIMIT 1")
                   .fetchone()[0])

    def write(self, key: Key, data: dict[str, Any]) -> RowState:
        held = self._held(key)
        if self._row(key) is None:
            self.app.execute(f'INSERT INTO "{key[0]}" (id, system_id, title) VALUES (?, ?, ?)',
                             (data["id"], data["system_id"], data["title"]))
        else:
            self.app.execute(f'UPDATE "{key[0]}" SET system_id = ?, title = ? WHERE id = ?',
                             (data["system_id"], data["title"], data["id"]))
        return RowState(Version(self._stamped(), self.origin), False, held, dict(data))

    def delete(self, key: Key) -> RowState | None:
        image = self._row(key)
        if image is None:
            return None
        held = self._held(key)
        self.app.execute(f'DELETE FROM "{key[0]}" WHERE id = ?', (key[1],))
        return RowState(Version(self._stamped(), self.origin), True, held, image)

    # -- sync --------------------------------------------------------------------------------

    def pending(self, table: str) -> list[Any]:
        return [c for c in self.store.pending() if c.table == table]

    def acknowledge(self, batch: list[Any], results: list[dict[str, Any]]) -> None:
        self.store.ack(batch, results)

    def apply_remote(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.store.apply_remote(table, rows)

    def cursor(self, table: str) -> int:
        return int(self.store.get_cursor(table)[0])

    def set_cursor(self, table: str, value: int) -> None:
        self.store.set_cursor(table, value)

    def last_hlc(self) -> int:
        return int(self.store.clock)

    def snapshot(self) -> dict[Key, RowState]:
        out: dict[Key, RowState] = {}
        for t, rid, h, o, d, bh, bo in self.app.execute(
                "SELECT table_name, record_id, hlc, origin, deleted, base_hlc, base_origin "
                "FROM _tablesync_meta"):
            key = (t, rid)
            image = self._row(key) or {}
            out[key] = RowState(Version(h, o), bool(d), Version(bh, bo), image)
        return out

    def conflicts(self) -> list[Conflict]:
        return [Conflict(c["table"], c["record_id"], _state(c["winner"]), _state(c["loser"]),
                         c["resolved_at"], c["reason"])
                for c in self.store.conflicts(limit=1_000_000)]


Key = base.Key


class StoreConvergenceMachine(base.ConvergenceMachine):
    """The convergence machine with LocalStore replicas over SQLite temp files."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tablesync-props-")
        super().__init__()

    def make_replica(self, i: int) -> Any:
        return StoreReplica(f"r{i}", self.walls[i], Path(self._tmp.name))

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            for rep in self.replicas:
                rep.close()  # type: ignore[attr-defined]
            self._tmp.cleanup()

    def check_converged(self) -> None:
        """Tombstones: the local row is gone, so compare them without the data image."""
        expected = self.expected()
        for rep in self.replicas:
            snap = rep.snapshot()
            for key, want in expected.items():
                if want.deleted and key in snap:
                    assert snap[key] == want, (rep.origin, key, snap[key], want)
                    snap[key] = want
            assert snap.keys() == {k for k, s in expected.items()
                                   if s.data.get("system_id") == base.SCOPE}
            for key, got in snap.items():
                assert base.same(got, expected[key]), (rep.origin, key, got, expected[key])
        self._check_server(expected)

    def _check_server(self, expected: dict[Key, RowState]) -> None:
        rows = {(t, rid): base.row_state(r) for t in base.TABLES
                for rid, r in self.server.rows(t).items()}
        assert rows.keys() == expected.keys()
        for key, want in expected.items():
            assert base.same(rows[key], want), (key, rows[key], want)


StoreConvergenceMachine.TestCase.settings = settings(
    max_examples=max(10, settings.default.max_examples // 2),
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreConvergence = StoreConvergenceMachine.TestCase


def test_delete_after_a_lost_acknowledgement_stays_deleted(tmp_path: Path) -> None:
    """The shortest failure the machine found: update pushed but its response lost, then a
    delete. The delete's base must be the update (the copy held it), not the last
    acknowledged version, or edit-wins ranks the delete below the update and the server
    answers "superseded" with the updated row: the user's delete is undone."""
    wall = FakeClock()
    rep = StoreReplica("r0", wall, tmp_path)
    server = base.MemoryServer(base.TABLES.values(), wall=wall)
    key = ("tasks", "t1")

    def push(ack: bool = True) -> None:
        batch = rep.pending("tasks")
        results = server.apply("tasks", [base.wire_row(c.state) for c in batch])
        if ack:
            rep.acknowledge(batch, [r.to_json() for r in results])

    try:
        rep.write(key, {"id": "t1", "system_id": base.SCOPE, "title": "v0"})
        push()
        wall.advance(1)
        rep.write(key, {"id": "t1", "system_id": base.SCOPE, "title": "v1"})
        push(ack=False)  # the server applied it; the replica crashed before the ack
        wall.advance(1)
        deleted = rep.delete(key)
        assert deleted is not None
        push()
        assert rep.pending("tasks") == []
        row = server.row("tasks", "t1")
        assert row is not None and row["_ts_deleted"], "the delete was superseded"
        assert rep.snapshot()[key].deleted
    finally:
        rep.close()
