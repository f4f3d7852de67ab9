"""tablesync.snapshot.StatusReader: the running engine's status never waits on the store.
It reads on its own read-only connection with a short busy timeout; when even that read is
refused (a real lock: another connection writing a rollback-journal database), the last
good counts come back marked stale, at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tablesync.project import load_project
from tablesync.snapshot import StatusReader
from tablesync.store import LocalStore

from reliability.stack import write_config

A = "system-a"


def test_a_locked_database_gives_the_last_counts_marked_stale_at_once(tmp_path: Path) -> None:
    project = load_project(write_config(tmp_path, None, A))
    LocalStore.open(project).close()
    db = tmp_path / f"{A}.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode = DELETE")   # here a writer's lock blocks readers too
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'x')", (A,))
    reader = StatusReader(db, project)
    try:
        first = reader.snapshot(A, state="Connected", engine_alive=True)
        assert (first.queue_depth, first.stale) == (1, False)
        app.execute("BEGIN EXCLUSIVE")
        app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t2', ?, 'y')", (A,))
        t0 = time.perf_counter()
        stale = reader.snapshot(A, state="Syncing", engine_alive=True)
        assert time.perf_counter() - t0 < 0.1
        assert (stale.queue_depth, stale.stale, stale.state) == (1, True, "Syncing")
        app.execute("COMMIT")
        fresh = reader.snapshot(A, state="Connected", engine_alive=True)
        assert (fresh.queue_depth, fresh.stale) == (2, False)
    finally:
        reader.close()
        app.close()


def test_no_good_read_yet_is_an_error_not_made_up_counts(tmp_path: Path) -> None:
    project = load_project(write_config(tmp_path, None, A))
    LocalStore.open(project).close()
    db = tmp_path / f"{A}.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode = DELETE")
    app.execute("BEGIN EXCLUSIVE")
    app.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'x')", (A,))
    reader = StatusReader(db, project)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reader.snapshot(A)
    finally:
        app.execute("ROLLBACK")
        reader.close()
        app.close()
