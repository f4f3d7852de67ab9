"""tablesync.causes: every failure classified by its real cause (errors produced for real:
a SQLite lock held by another connection, SQLite's SQLITE_FULL, a full-disk OSError), and
the one mapping cause -> colour -> /healthz -> exit code that the indicator, health() and
exit_code() share."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from tablesync.causes import EXIT_CODES, HTTP_CODES, RED_CAUSES, Cause, classify, describe
from tablesync.errors import (AuthError, DeadSessionError, ForbiddenError, PayloadError,
                              RemoteError, StoreError, TablesyncError, TransientRemoteError)
from tablesync.status import StatusSnapshot, exit_code, health, indicator, verdict


def _locked_error(tmp: Path) -> sqlite3.Error:
    path = tmp / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            other.execute("INSERT INTO t VALUES (1)")
        return info.value
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        other.close()


def _full_error(tmp: Path) -> sqlite3.Error:
    conn = sqlite3.connect(tmp / "full.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        with pytest.raises(sqlite3.Error) as info:
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
        return info.value
    finally:
        conn.close()


def _wrapped(exc: BaseException, message: str) -> StoreError:
    """A StoreError raised from ``exc``, as the store raises them."""
    try:
        raise StoreError(message) from exc
    except StoreError as wrapped:
        return wrapped


def test_local_failures_are_classified_from_the_real_sqlite_errors(tmp_path: Path) -> None:
    locked, full = _locked_error(tmp_path), _full_error(tmp_path)
    assert classify(locked) is Cause.LOCAL_LOCKED
    assert classify(full) is Cause.LOCAL_FULL
    assert classify(_wrapped(locked, "apply_remote tasks: refused")) is Cause.LOCAL_LOCKED
    assert classify(_wrapped(full, "apply_remote tasks: refused")) is Cause.LOCAL_FULL
    assert classify(StoreError("cannot start a transaction: database is locked")
                    ) is Cause.LOCAL_LOCKED
    assert classify(OSError(errno.ENOSPC, "No space left on device")) is Cause.LOCAL_FULL
    # a store error that is neither: the rows themselves
    assert classify(_wrapped(sqlite3.IntegrityError("CHECK constraint failed"), "refused")
                    ) is Cause.BAD_LOCAL_ROW


@pytest.mark.parametrize(("exc", "cause"), [
    (TransientRemoteError("connection refused"), Cause.SERVER_UNREACHABLE),
    (TransientRemoteError("503", status=503), Cause.SERVER_UNREACHABLE),
    (AuthError("Invalid login credentials", status=400), Cause.AUTH),
    (DeadSessionError("refresh token revoked"), Cause.AUTH),
    (ForbiddenError("new row violates row-level security", status=403), Cause.SERVER_REFUSED),
    (PayloadError("not a JSON array"), Cause.SERVER_REFUSED),
    (RemoteError("bad request", status=400), Cause.SERVER_REFUSED),
    (RemoteError("relation does not exist", status=404, code="42P01"),
     Cause.SERVER_SCHEMA_BEHIND),
    (RemoteError("Could not find the function", status=404, code="PGRST202"),
     Cause.SERVER_SCHEMA_BEHIND),
    (TablesyncError("something else"), Cause.NONE),
    (ValueError("a bug"), Cause.NONE),
    (None, Cause.NONE),
])
def test_remote_failures_by_type_and_status(exc: BaseException | None, cause: Cause) -> None:
    assert classify(exc) is cause


def _snap(**kw: object) -> StatusSnapshot:
    base: dict[str, object] = dict(system_id="a", state="Connected", engine_alive=True,
                                   queue_depth=0, websocket="connected")
    base.update(kw)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("cause", list(Cause))
def test_each_cause_has_one_colour_code_and_exit_code(cause: Cause) -> None:
    snap = _snap(cause=cause.value, state="Disconnected", queue_depth=2,
                 last_error="boom" if cause is not Cause.NONE else None)
    colour = "red" if cause in RED_CAUSES else "yellow"
    assert indicator(snap) == colour
    assert health(snap)[0] == (HTTP_CODES[colour] == 200)
    assert exit_code(snap) == EXIT_CODES[colour]
    if cause in RED_CAUSES:
        assert describe(cause) in verdict(snap)[1][0]


def test_indicator_health_and_exit_code_always_agree() -> None:
    grid = [_snap(), _snap(queue_depth=5), _snap(state="Syncing"), _snap(parked=1),
            _snap(reauth_required=True, state="Failed", cause="auth"),
            _snap(engine_alive=False, state="Stopped"), _snap(engine_alive=False),
            _snap(websocket="disconnected", websocket_down_s=31),
            _snap(websocket="disconnected", websocket_down_s=31, state="Disconnected",
                  cause="server_unreachable"),
            _snap(queue_depth=1000), _snap(consecutive_errors=3, state="Syncing"),
            _snap(cause="local_locked", state="Disconnected")]
    for snap in grid:
        colour = indicator(snap)
        ok, reasons = health(snap)
        assert ok == (colour != "red") and bool(reasons) == (colour == "red"), snap
        assert exit_code(snap) == {"green": 0, "yellow": 1, "red": 2}[colour], snap
