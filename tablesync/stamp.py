"""Turn the capture triggers' wall-time stamps into HLC versions (queue order).

The triggers write ``created_at = julianday('now')`` and leave ``hlc = 0`` (cheap: one
clock read per captured row). :func:`stamp_pending` gives every queue entry after the
watermark in ``_tablesync_stamp`` its version

    hlc_i = max(wall_ms_i << 16, max(observed, hlc_{i-1}) + 1)

which is exactly what a trigger computing the HLC at write time would have stamped, as
long as the observed clock (``_tablesync_state.hlc``) did not move between the write and
the stamping. The store guarantees that: only its apply transactions raise the observed
clock, and every one of them stamps first, inside the same transaction (SQLite has one
writer at a time, so no app write can fall between the stamping and the raise).

The recurrence is computed set-based: with ``g_i = hlc_i - i`` it becomes a running
maximum, ``hlc_i = i + max(h0, max_{j<=i}(w_j - j))`` with ``h0 = max(observed,
previous stamp)``, one window function per chunk. ``created_at`` is rewritten as UTC text
(``YYYY-MM-DD HH:MM:SS.SSS``) at the same time, so stamped entries read like the seed's.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

CHUNK = 50_000
HLC_CEILING = (1 << 63) - 1 - (1 << 40)   # leaves room for 2^40 stamps above it
JD_UNIX_EPOCH = 2440587.5
MS_PER_DAY = 86_400_000

# a queue entry's wall time in ms (its created_at; now if unreadable)
WALL_MS_SQL = (f"CAST(round((coalesce(julianday(created_at), julianday('now')) - "
               f"{JD_UNIX_EPOCH}) * {MS_PER_DAY}) AS INTEGER)")

_STAMP_SQL = f"""
WITH s AS (
  SELECT id, row_number() OVER (ORDER BY id) AS i, ({WALL_MS_SQL} << 16) AS w
  FROM sync_queue WHERE id > :after AND id <= :upto
), h AS (
  SELECT id, i + max(:h0, max(w - i) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING)) AS hlc
  FROM s
)
UPDATE sync_queue SET hlc = h.hlc,
  created_at = CASE WHEN typeof(sync_queue.created_at) IN ('real', 'integer')
                    THEN strftime('%Y-%m-%d %H:%M:%f', sync_queue.created_at)
                    ELSE sync_queue.created_at END
FROM h WHERE sync_queue.id = h.id
"""


def chain(h0: int, walls_ms: Iterable[int]) -> list[int]:
    """The reference recurrence (pure): versions for writes at ``walls_ms`` after ``h0``."""
    out, prev = [], h0
    for wall in walls_ms:
        prev = max(wall << 16, prev + 1)
        out.append(prev)
    return out


def stamp_pending(conn: sqlite3.Connection, chunk: int = CHUNK) -> int:
    """Stamp every unstamped queue entry; inside the caller's write transaction.

    Returns how many entries were stamped. Work per call is bounded by the number of
    entries present when it starts (chunks of ``chunk`` ids)."""
    row = conn.execute("SELECT stamped_id, hlc FROM _tablesync_stamp WHERE id = 1").fetchone()
    after, last = (int(row[0]), int(row[1])) if row else (0, 0)
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM sync_queue").fetchone()
    if top <= after:
        if top < after:          # the queue was emptied by hand: ids may start over
            _save(conn, top, last)
        return 0
    (observed,) = conn.execute("SELECT hlc FROM _tablesync_state WHERE id = 1").fetchone()
    done = 0
    for _ in range((top - after) // chunk + 1):       # bounded: ids only grow
        upto = min(after + chunk, top)
        # never above HLC_CEILING: i + h0 must stay an INTEGER (SQLite would turn an
        # overflow into a REAL); a clock that high is refused by the server and re-stamped
        h0 = min(max(int(observed), last), HLC_CEILING)
        conn.execute(_STAMP_SQL, {"after": after, "upto": upto, "h0": h0})
        done += conn.execute("SELECT changes()").fetchone()[0]  # rowcount is -1 for WITH
        got = conn.execute("SELECT hlc FROM sync_queue WHERE id > ? AND id <= ? "
                           "ORDER BY id DESC LIMIT 1", (after, upto)).fetchone()
        if got is not None:
            last = int(got[0])
        after = upto
        if after >= top:
            break
    _save(conn, top, last)
    return done


def needs_stamp(conn: sqlite3.Connection) -> bool:
    """True when queue entries after the stamping watermark exist (two index lookups)."""
    (todo,) = conn.execute(
        "SELECT coalesce((SELECT max(id) FROM sync_queue), 0) != "
        "coalesce((SELECT stamped_id FROM _tablesync_stamp WHERE id = 1), 0)").fetchone()
    return bool(todo)


def last_stamp(conn: sqlite3.Connection) -> int:
    """The newest version stamped on a queue entry (0 before the first)."""
    row = conn.execute("SELECT hlc FROM _tablesync_stamp WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _save(conn: sqlite3.Connection, stamped_id: int, hlc: int) -> None:
    conn.execute("INSERT OR REPLACE INTO _tablesync_stamp (id, stamped_id, hlc) "
                 "VALUES (1, ?, ?)", (stamped_id, hlc))
