"""Noticing the app's writes: the engine polls ``max(sync_queue.id)`` on its own read-only
connection (a cheap index lookup) and reports every change of it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Callable

__all__ = ["watch_queue"]


async def watch_queue(path: str | Path, interval: float, on_change: Callable[[], None]) -> None:
    """Call ``on_change`` whenever new ``sync_queue`` entries appear (until cancelled)."""
    conn = await asyncio.get_running_loop().run_in_executor(None, _reader, str(path))
    try:
        last = _max_queue_id(conn)
        while True:
            await asyncio.sleep(interval)
            now = _max_queue_id(conn)
            if now != last:
                last = now
                on_change()
    finally:
        conn.close()


def _reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _max_queue_id(conn: sqlite3.Connection) -> int:
    try:
        (value,) = conn.execute("SELECT coalesce(max(id), 0) FROM sync_queue").fetchone()
    except sqlite3.Error:
        return -1
    return int(value)
