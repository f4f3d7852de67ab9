"""Cycles.push_batch's pipelined runs: order, acknowledgement, failures mid-pipeline.

The server is the in-memory model (:mod:`tablesync.remote.memory`) behind a recording
remote that can fail a chosen request; the local side is a real LocalStore (SQLite file)
filled by a plain sqlite3 app through the capture triggers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from tablesync.cycles import Cycles
from tablesync.errors import RemoteError, TransientRemoteError
from tablesync.metrics import Metrics
from tablesync.project import Project, load_project
from tablesync.remote.base import EncodedRows
from tablesync.remote.memory import MemoryRemote, MemoryServer, ServerTable
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
TABLES = (ROOT / "sync.toml").read_text().split("[tables.projects]", 1)[1]


class Recorder:
    """A Remote over MemoryRemote recording every apply call (and failing chosen ones)."""

    def __init__(self, inner: MemoryRemote, fail: dict[int, Exception] | None = None,
                 delay: float = 0.0) -> None:
        self.inner, self.fail, self.delay = inner, dict(fail or {}), delay
        self.calls: list[tuple[str, list[str]]] = []          # answered, in server order
        self.spans: list[tuple[float, float]] = []
        self.active = 0
        self.overlap = False
        self.bodies = 0
        self._lock = threading.Lock()

    def apply(self, table: str, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        with self._lock:
            self.active += 1
            self.overlap |= self.active > 1
        start = time.monotonic()
        try:
            n = len(self.spans) + 1
            if isinstance(rows, EncodedRows) and rows.body:
                self.bodies += 1
            time.sleep(self.delay)
            if n in self.fail:
                self.spans.append((start, time.monotonic()))
                raise self.fail.pop(n)
            out = self.inner.apply(table, rows)
            self.calls.append((table, [str(r["id"]) for r in rows]))
            self.spans.append((start, time.monotonic()))
            return out
        finally:
            with self._lock:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _project(tmp: Path) -> Project:
    cfg = tmp / "sync.toml"
    cfg.write_text(f'[system]\nid = "system-a"\ndatabase = "{tmp / "a.db"}"\n[sync]\n'
                   f'batch_size = 3\n[paths]\nschemas = "{ROOT / "schemas"}"\n'
                   f'token_store = "{tmp / "auth.json"}"\nconflict_log = "{tmp / "c.log"}"\n'
                   "[tables.projects]" + TABLES)
    return load_project(cfg)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    project = _project(tmp_path)
    store = LocalStore.open(project)
    server = MemoryServer([ServerTable.from_spec(s) for s in project.tables])
    app = sqlite3.connect(project.config.database_path, isolation_level=None)
    yield project, store, server, app
    app.close()
    store.close()


def _cycles(project: Project, store: LocalStore, remote: Any, *, batch: int = 3,
            chunk: int | None = None) -> tuple[Cycles, list[str]]:
    errors: list[str] = []
    cycles = Cycles(project, store, remote, batch_size=batch, metrics=Metrics(),
                    notify=lambda changes: None,
                    on_error=lambda message, _cause: errors.append(message))
    if chunk is not None:
        cycles.chunk = chunk
    return cycles, errors


def _drain(cycles: Cycles, limit: int = 100) -> list[str]:
    outcomes = []
    for _ in range(limit):
        result = cycles.push_batch(None)
        outcomes.append(result.outcome)
        if result.outcome == "ok" and not result.backlog:
            return outcomes
    raise AssertionError(f"no end of the drain: {outcomes}")


def _tasks(app: sqlite3.Connection, ids: range, prefix: str = "t") -> None:
    app.executemany("INSERT INTO tasks (id, system_id, title) VALUES (?, 'system-a', 'x')",
                    [(f"{prefix}{i:03d}",) for i in ids])


def _pending_ids(store: LocalStore) -> list[str]:
    return sorted(c.record_id for c in store.pending())


def test_pipelined_run_is_sequential_ordered_and_acks_every_batch(env: Any) -> None:
    project, store, server, app = env
    app.executemany("INSERT INTO projects (id, system_id, name) VALUES (?, 'system-a', 'p')",
                    [(f"p{i}",) for i in range(4)])
    app.executemany("INSERT INTO tasks (id, system_id, project_id, title) VALUES "
                    "(?, 'system-a', ?, 'x')", [(f"t{i:03d}", f"p{i % 4}") for i in range(20)])
    remote = Recorder(MemoryRemote(server, system_id="system-a"), delay=0.01)
    cycles, errors = _cycles(project, store, remote, chunk=100)
    assert _drain(cycles) == ["ok"]                    # one run: 2 + 7 batches
    assert not remote.overlap                          # never two requests at once
    starts_after_ends = all(b[0] >= a[1] for a, b in zip(remote.spans, remote.spans[1:]))
    assert starts_after_ends
    tables = [t for t, _ in remote.calls]
    assert tables == ["projects"] * 2 + ["tasks"] * 7   # parents first (FK-safe order)
    sent = [i for _, ids in remote.calls for i in ids]
    assert sorted(sent) == sorted([f"p{i}" for i in range(4)] + [f"t{i:03d}" for i in range(20)])
    assert len(sent) == len(set(sent))                 # each record once
    assert remote.bodies == len(remote.calls)          # encoded ahead of the send
    assert store.pending() == [] and store.stats().depth == 0 and not errors


def test_a_failure_mid_pipeline_stops_sending_and_loses_nothing(env: Any) -> None:
    project, store, server, app = env
    _tasks(app, range(30))
    boom = TransientRemoteError("apply tasks: HTTP 500: boom", status=500)
    remote = Recorder(MemoryRemote(server, system_id="system-a"), fail={4: boom})
    cycles, errors = _cycles(project, store, remote, chunk=100)
    first = cycles.push_batch(None)
    assert first.outcome == "transient" and errors == [str(boom)]
    assert len(remote.spans) == 4 and len(remote.calls) == 3   # nothing sent after the 500
    acked = [i for _, ids in remote.calls for i in ids]
    assert acked == [f"t{i:03d}" for i in range(9)]
    # only what the server acknowledged is marked synced; the rest is still pending
    assert _pending_ids(store) == [f"t{i:03d}" for i in range(9, 30)]
    assert [c.record_id for c in list(cycles.backlog)[:3]] == ["t009", "t010", "t011"]
    assert _drain(cycles) == ["ok"]
    on_server = sorted(i for _, ids in remote.calls for i in ids)
    assert on_server == [f"t{i:03d}" for i in range(30)]      # each once, none lost
    assert store.pending() == []


def test_a_refused_batch_is_isolated_and_later_batches_are_not_lost(env: Any) -> None:
    project, store, server, app = env
    _tasks(app, range(9))
    remote = Recorder(MemoryRemote(server, system_id="system-a"),
                      fail={2: RemoteError("apply tasks: HTTP 400: bad", status=400)})
    cycles, _ = _cycles(project, store, remote, chunk=100)
    _drain(cycles)
    # batch 2 (t003..t005) was resent one record per request, then the rest continued
    sizes = [len(ids) for _, ids in remote.calls]
    assert sizes == [3, 1, 1, 1, 3]
    assert sorted(i for _, ids in remote.calls for i in ids) == [f"t{i:03d}" for i in range(9)]
    assert store.pending() == []


def test_next_chunk_read_while_batches_are_in_flight(env: Any) -> None:
    project, store, server, app = env
    _tasks(app, range(25))
    remote = Recorder(MemoryRemote(server, system_id="system-a"), delay=0.005)
    cycles, _ = _cycles(project, store, remote, chunk=7)        # 4 chunks, one run
    reads: list[int] = []
    real = store.pending

    def counting(limit: int | None = None, skip: Any = (), **kw: Any) -> Any:
        out = real(limit=limit, skip=skip, **kw)
        reads.append(len(out))
        return out

    store.pending = counting  # type: ignore[method-assign]
    app_writes = {"done": False}
    real_apply = remote.inner.apply

    def apply_and_edit(table: str, rows: Any) -> Any:
        if not app_writes["done"] and any(r["id"] == "t001" for r in rows):
            # the app (its own connection) edits a record whose first write is in flight
            with sqlite3.connect(project.config.database_path, isolation_level=None) as other:
                other.execute("UPDATE tasks SET title = 'edited' WHERE id = 't001'")
            app_writes["done"] = True
        return real_apply(table, rows)

    remote.inner.apply = apply_and_edit  # type: ignore[method-assign]
    assert _drain(cycles) == ["ok"]
    assert len(reads) >= 4 and not remote.overlap
    sent = [i for _, ids in remote.calls for i in ids]
    assert sorted(set(sent)) == [f"t{i:03d}" for i in range(25)]
    assert sent.count("t001") == 2                      # the first write, then the edit
    assert store.pending() == []
    rows = server.pull("tasks", cursor=0, limit=1000, system_id="system-a")
    assert next(r for r in rows if r["id"] == "t001")["title"] == "edited"


def test_a_uuid_key_postgres_spells_otherwise_is_parked_alone_and_the_rest_goes(
        tmp_path: Path) -> None:
    """Without this, an upper-case UUID key was stored lower-case on the server: the other
    replicas knew the record under an id this one did not have, without a word."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "things.sql").write_text(
        "CREATE TABLE things (id UUID PRIMARY KEY, system_id TEXT NOT NULL, v TEXT);\n")
    cfg = tmp_path / "sync.toml"
    cfg.write_text(f'[system]\nid = "system-a"\ndatabase = "{tmp_path / "a.db"}"\n'
                   f'[paths]\nschemas = "{schemas}"\ntoken_store = "{tmp_path / "t.json"}"\n'
                   f'conflict_log = "{tmp_path / "c.log"}"\n'
                   '[tables.things]\nschema = "things.sql"\n')
    project = load_project(cfg)
    store = LocalStore.open(project)
    server = MemoryServer([ServerTable.from_spec(s) for s in project.tables])
    app = sqlite3.connect(project.config.database_path, isolation_level=None)
    try:
        good, bad = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "9C0D1E2F-3A4B-4C5D-8E6F-7A8B9C0D1E2F"
        for key in (good, bad, "00000000-0000-4000-8000-000000000001"):
            app.execute("INSERT INTO things (id, system_id, v) VALUES (?, 'system-a', 'x')",
                        (key,))
        cycles, errors = _cycles(project, store, MemoryRemote(server, system_id="system-a"))
        _drain(cycles)
        assert sorted(server.rows("things")) == [
            "00000000-0000-4000-8000-000000000001", good]
        (reason,) = [r for (r,) in app.execute(
            "SELECT reason FROM _tablesync_parked WHERE record_id = ?", (bad,))]
        assert "'9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f'" in reason and "'id'" in reason
        assert any("9C0D1E2F" in e for e in errors)
    finally:
        app.close()
        store.close()
