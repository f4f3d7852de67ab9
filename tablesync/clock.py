"""Hybrid logical clocks, and the time sources that token expiry is measured with.

An HLC value is one integer: ``physical_ms << 16 | logical``. It compares like a wall
clock when clocks agree and never goes backwards: after seeing version ``T`` a node stamps
its next write above ``T``, however far behind its wall clock is. The same packing is
computed by the generated SQLite triggers, so pure and SQL clocks agree.

Token expiry (``Session``, ``Tokens.expires_in``) reads a :data:`TimeSource`: any callable
returning Unix seconds, ``time.time`` by default. Tests pass a :class:`ManualClock` instead
(to the session and to the devserver alike) and advance it rather than sleeping until a
token expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1

TimeSource = Callable[[], float]
"""Unix seconds (UTC) as a float, like ``time.time``: what token lifetimes are measured in."""


MAX_HLC = (1 << 63) - 1             # SQLite INTEGER / Postgres bigint


def too_far_ahead(hlc: int, now_ms: int, max_skew_ms: int) -> bool:
    """Is version ``hlc`` beyond the bound: its wall-clock part more than ``max_skew_ms``
    ahead of ``now_ms`` (or not a version at all: negative, above :data:`MAX_HLC`)? A
    version within the bound leaves 2^63 / 2^16 ms (~4 million years) of headroom, so no
    ``+ 1`` on it can overflow."""
    return hlc < 0 or hlc > MAX_HLC or (hlc >> LOGICAL_BITS) > now_ms + max_skew_ms


def pack(physical_ms: int, logical: int = 0) -> int:
    """Pack milliseconds and a logical counter into one HLC integer."""
    return (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)


def physical_ms(hlc: int) -> int:
    """The wall-clock milliseconds part of an HLC."""
    return hlc >> LOGICAL_BITS


def to_iso(hlc: int) -> str:
    """Render an HLC's physical part as an ISO-8601 UTC timestamp (for humans)."""
    ms = physical_ms(hlc)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


class WallClock(Protocol):
    """Something that tells the time in milliseconds since the Unix epoch (UTC)."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A settable clock for tests: ``skew_ms`` models a machine whose clock is off."""

    def __init__(self, start_ms: int = 1_800_000_000_000, skew_ms: int = 0) -> None:
        self.t = start_ms
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return self.t + self.skew_ms

    def advance(self, ms: int) -> None:
        self.t += ms


class HLC:
    """A thread-safe hybrid logical clock over a :class:`WallClock`."""

    def __init__(self, wall: WallClock | None = None, last: int = 0) -> None:
        self._wall = wall or SystemClock()
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def tick(self) -> int:
        """Stamp a local write: above the wall clock and above everything seen."""
        with self._lock:
            self._last = max(pack(self._wall.now_ms()), self._last + 1)
            return self._last

    def observe(self, remote_hlc: int) -> None:
        """Record a version seen from elsewhere, so later local writes order after it."""
        with self._lock:
            self._last = max(self._last, remote_hlc)


class ManualClock:
    """A time source for tests that moves only when told to.

    Call it (or :meth:`time`) for Unix seconds; :meth:`now_ms` makes it a
    :class:`WallClock` too. It starts at the real time (so tokens it stamps look current)
    and then stands still until :meth:`advance`; with ``follow_real_time`` it runs with
    the machine's clock and :meth:`advance` adds a jump on top (for tests whose tokens must
    also expire on their own). Thread-safe: the devserver reads it from its own thread.
    """

    def __init__(self, start: float | None = None, *, follow_real_time: bool = False) -> None:
        self._base = time.time() if start is None else float(start)
        self._offset = 0.0
        self._follow = follow_real_time
        self._origin = time.monotonic()
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            now = self._base + self._offset
            if self._follow:
                now += time.monotonic() - self._origin
            return now

    __call__ = time

    def now_ms(self) -> int:
        return int(self.time() * 1000)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never backwards: expiry only goes one way)."""
        if seconds < 0:
            raise ValueError("a ManualClock does not go backwards")
        with self._lock:
            self._offset += seconds

    def __repr__(self) -> str:
        return f"ManualClock({self.time():.3f})"
