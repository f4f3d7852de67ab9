"""Retry delays: 1, 2, 4, 8 s with jitter, then offline mode with a slower retry (pure).

A :class:`Backoff` counts consecutive failures of one kind of work (pushing, pulling,
connecting). ``next_delay()`` after a failure returns how long to wait before the next try;
``reset()`` after a success starts over. After ``max_retries`` failures in a row the backoff
is *offline*: every further delay is ``offline_interval`` (jittered too), so a dead network
costs one request per ``offline_interval`` instead of a tight loop, and nothing stalls forever.

A ``Retry-After`` from the server (429/503) is honoured: the delay is never shorter than it
(capped at ``max_retry_after`` so a hostile header cannot park the engine for a day).

Jitter is "equal jitter": the delay is uniformly drawn from ``[d * (1 - jitter), d]``; with
an injected ``random.Random`` the schedule is deterministic, which the tests rely on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DEFAULT_BASE = 1.0
DEFAULT_FACTOR = 2.0
DEFAULT_CAP = 8.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_OFFLINE_INTERVAL = 60.0
DEFAULT_JITTER = 0.25
DEFAULT_MAX_RETRY_AFTER = 600.0

__all__ = ["Backoff", "parse_retry_after"]


@dataclass
class Backoff:
    """Consecutive-failure counter turning failures into delays.

    Args:
        base: first delay in seconds.
        factor: growth per failure.
        cap: largest delay before offline mode.
        max_retries: failures in a row before offline mode.
        offline_interval: delay between tries once offline.
        jitter: fraction of each delay that is randomised (0 = none).
        max_retry_after: the largest ``Retry-After`` honoured.
        rng: source of jitter (inject ``random.Random(seed)`` for determinism).
    """

    base: float = DEFAULT_BASE
    factor: float = DEFAULT_FACTOR
    cap: float = DEFAULT_CAP
    max_retries: int = DEFAULT_MAX_RETRIES
    offline_interval: float = DEFAULT_OFFLINE_INTERVAL
    jitter: float = DEFAULT_JITTER
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if self.max_retries < 1 or self.offline_interval <= 0:
            raise ValueError("backoff needs max_retries >= 1 and offline_interval > 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")

    @property
    def offline(self) -> bool:
        """True once ``max_retries`` failures happened in a row."""
        return self.failures >= self.max_retries

    def nominal(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (>= 1)."""
        if failures >= self.max_retries:
            return self.offline_interval
        return min(self.cap, self.base * self.factor ** max(0, failures - 1))

    def next_delay(self, retry_after: float | None = None) -> float:
        """Record one failure and return the delay (seconds) before the next try."""
        self.failures += 1
        nominal = self.nominal(self.failures)
        delay = nominal * (1.0 - self.jitter * self.rng.random())
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def reset(self) -> None:
        """A success: the next failure starts the schedule again at ``base``."""
        self.failures = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _retry_after_date(value)
    return seconds if seconds >= 0 else None


def _retry_after_date(value: str) -> float | None:
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
