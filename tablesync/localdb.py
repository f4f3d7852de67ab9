"""SQLite building blocks shared by the parts of the local store.

:mod:`tablesync.store` (the facade), :mod:`tablesync.outbox`, :mod:`tablesync.inbox`,
:mod:`tablesync.conflicts` and :mod:`tablesync.reset` use these: identifier quoting,
multi-row INSERTs, batched reads of stored versions (``_tablesync_meta``) and row images,
parked marks, the echo guard and timestamps. Plain functions taking a connection; they
run inside the caller's transaction and take no lock.
"""

from __future__ import annotations

import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tablesync.errors import StoreError
from tablesync.model import RowState, TableSpec, Version
from tablesync.sql.base import ident

CHUNK = 500                            # record ids per IN (...) list
ROWS_PER_INSERT = 100                  # value rows per multi-row INSERT of the bulk path

META_UPSERT = ("INSERT OR REPLACE INTO _tablesync_meta (table_name, record_id, hlc, origin, "
               "deleted, base_hlc, base_origin) VALUES (?, ?, ?, ?, ?, ?, ?)")


def utcnow() -> str:
    """UTC timestamp in SQLite's CURRENT_TIMESTAMP style plus milliseconds."""
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


@functools.lru_cache(maxsize=4096)
def write_backup_file(folder: Path, stem: str, suffix: str, text: str, *, what: str,
                      undone: str) -> Path:
    """``text`` in a new 0600 file ``<stem><UTC time><suffix>`` in ``folder`` (``-<n>``
    before the suffix when that name is taken within the second), fsynced; its path.
    Failures are a :class:`StoreError` naming the file, ``what`` was being written and
    what was therefore left ``undone``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stem}{stamp}{suffix}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):            # bounded: a free name for this second
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                path = folder / f"{stem}{stamp}-{n}{suffix}"
        else:
            raise StoreError(f"{folder}: no free file name for {what}; {undone}")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StoreError(f"{path}: cannot write {what}: {exc}; {undone}") from exc
    return path


def quote(name: str) -> str:
    """``name`` quoted for SQLite (through sqlglot once per name, then cached)."""
    return ident(name, "sqlite")


def _lossless(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def is_decode_error(exc: BaseException) -> bool:
    """sqlite3's error for TEXT that is not valid UTF-8 (written by the app as bytes)."""
    return isinstance(exc, sqlite3.OperationalError) and "decode" in str(exc)


@contextmanager
def lossless_text(conn: sqlite3.Connection) -> Iterator[None]:
    """Inside the block, TEXT that is not valid UTF-8 reads as a ``str`` with surrogate
    escapes (valid text reads as usual) instead of failing the whole query; the push then
    parks such a record with the reason (:func:`tablesync.remote.base.unencodable`).
    Used only to re-run a read that failed that way (the default factory is faster)."""
    old = conn.text_factory
    conn.text_factory = _lossless
    try:
        yield
    finally:
        conn.text_factory = old


@contextmanager
def echo_guard(conn: sqlite3.Connection) -> Iterator[None]:
    """Writes to user tables inside the block are not captured: ``_tablesync_state.applying``
    is 1 meanwhile, which the capture triggers check (:mod:`tablesync.sql.sqlite`), so rows
    written by sync itself (server rows, removals) are never queued as local changes.

    Inside the caller's write transaction. On an exception nothing more is written: the
    caller's transaction rolls back, which clears the guard with everything else.
    """
    conn.execute("UPDATE _tablesync_state SET applying = 1")
    yield
    conn.execute("UPDATE _tablesync_state SET applying = 0")


@functools.lru_cache(maxsize=256)
def multi_values(sql: str, n: int) -> str:
    """``sql`` (an INSERT with one ``VALUES (?, ...)`` row) with ``n`` value rows."""
    head, _, rest = sql.partition(" VALUES (")
    marks, _, tail = rest.partition(")")
    return f"{head} VALUES {', '.join([f'({marks})'] * n)}{tail}"


def insert_rows(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``executemany(sql, rows)`` as INSERTs of up to ``ROWS_PER_INSERT`` value rows each:
    one statement step per 100 rows instead of per row (about half the CPU here)."""
    if not rows:
        return
    per = max(1, min(ROWS_PER_INSERT,
                     conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])))
    full = len(rows) - len(rows) % per
    if full:
        stmt = multi_values(sql, per)
        for i in range(0, full, per):
            conn.execute(stmt, list(itertools.chain.from_iterable(rows[i:i + per])))
    if full < len(rows):
        conn.executemany(sql, rows[full:])


def metas(conn: sqlite3.Connection, table: str, rids: Sequence[str]) -> dict[str, RowState]:
    """The stored versions (``_tablesync_meta``) of ``rids`` that have one (no data)."""
    out: dict[str, RowState] = {}
    for i in range(0, len(rids), CHUNK):
        part = rids[i:i + CHUNK]
        marks = ",".join("?" * len(part))
        for rid, hlc, origin, deleted, bh, bo in conn.execute(
                "SELECT record_id, hlc, origin, deleted, base_hlc, base_origin FROM "
                f"_tablesync_meta WHERE table_name = ? AND record_id IN ({marks})",
                (table, *part)):
            out[rid] = RowState(Version(hlc, origin), bool(deleted), Version(bh, bo))
    return out


def images(conn: sqlite3.Connection, spec: TableSpec,
           rids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The local rows (declared columns) of those of ``rids`` present in ``spec``'s table."""
    cols = spec.column_names
    select = ", ".join(quote(c) for c in cols)
    pk = quote(spec.primary_key)
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(rids), CHUNK):
        part = rids[i:i + CHUNK]
        sql = (f"SELECT {select} FROM {quote(spec.name)} WHERE {pk} IN "
               f"({','.join('?' * len(part))})")
        try:
            found = conn.execute(sql, part).fetchall()
        except sqlite3.OperationalError as exc:
            if not is_decode_error(exc):
                raise
            with lossless_text(conn):           # one bad row must not fail the others
                found = conn.execute(sql, part).fetchall()
        for row in found:
            data = dict(zip(cols, row))
            out[str(data[spec.primary_key])] = data
    return out


def park(conn: sqlite3.Connection, table: str, rid: str, reason: str) -> None:
    """Mark a record parked: its pending entries are held back from pushes."""
    conn.execute("INSERT OR REPLACE INTO _tablesync_parked (table_name, record_id, reason, "
                 "parked_at) VALUES (?, ?, ?, ?)", (table, rid, reason, utcnow()))


def settle_parked(conn: sqlite3.Connection, table: str, rid: str) -> None:
    """Drop ``rid``'s parked mark (its retry count stays: a record refused for its
    content is parked again after one more try)."""
    conn.execute("DELETE FROM _tablesync_parked WHERE table_name = ? AND record_id = ?",
                 (table, rid))
