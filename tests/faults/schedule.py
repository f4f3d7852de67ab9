"""Measure retries: do the gaps between attempts follow the backoff schedule? (pure)

The proxy records a monotonic timestamp for every new connection and every HTTP request
line (``FaultProxy.connect_times()`` / ``request_times(contains)``). These helpers compare
the gaps between consecutive attempts with the engine's policy (``tablesync.backoff``):
after failure *k* the delay is drawn from ``[d_k * (1 - jitter), d_k]`` with
``d_k = min(cap, base * factor ** (k - 1))``, and never shorter than a ``Retry-After``.

A measured gap also contains the failed request's round trip, so only the upper bound gets
a ``slack``; the lower bound allows ``early`` seconds for timer granularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_SLACK = 0.25
DEFAULT_EARLY = 0.01


def gaps(times: Sequence[float]) -> list[float]:
    """Seconds between consecutive timestamps."""
    return [b - a for a, b in zip(times, times[1:])]


def backoff_schedule(n: int, *, base: float = 1.0, factor: float = 2.0,
                     cap: float = 8.0) -> list[float]:
    """The first ``n`` nominal (un-jittered) delays: 1, 2, 4, 8, 8, ... by default."""
    return [min(cap, base * factor ** k) for k in range(n)]


@dataclass(frozen=True)
class Window:
    """Where one measured gap must fall."""

    nominal: float
    low: float
    high: float

    def holds(self, gap: float) -> bool:
        return self.low <= gap <= self.high


def windows(nominal: Sequence[float], *, jitter: float = 0.25, slack: float = DEFAULT_SLACK,
            early: float = DEFAULT_EARLY, retry_after: float | None = None) -> list[Window]:
    """Allowed gap ranges for the given nominal delays."""
    out = []
    for d in nominal:
        low = d * (1.0 - jitter)
        if retry_after is not None:
            low, d = max(low, retry_after), max(d, retry_after)
        out.append(Window(d, max(0.0, low - early), d + slack))
    return out


def check_gaps(times: Sequence[float], nominal: Sequence[float], **kw: float | None) -> list[str]:
    """Problems (empty = fine) comparing the gaps of ``times`` with ``nominal`` delays."""
    measured = gaps(times)
    if len(measured) != len(nominal):
        return [f"expected {len(nominal)} retries ({len(nominal) + 1} attempts), "
                f"saw {len(measured)} ({len(times)} attempts)"]
    problems = []
    for i, (gap, window) in enumerate(zip(measured, windows(nominal, **kw))):  # type: ignore[arg-type]
        if not window.holds(gap):
            problems.append(f"retry {i + 1}: gap {gap:.3f} s outside "
                            f"[{window.low:.3f}, {window.high:.3f}] (nominal {window.nominal:g} s)")
    return problems


def assert_backoff(times: Sequence[float], nominal: Sequence[float], **kw: float | None) -> None:
    """AssertionError listing every gap when the attempts do not follow ``nominal``."""
    problems = check_gaps(times, nominal, **kw)
    if problems:
        table = ", ".join(f"{g:.3f}" for g in gaps(times))
        raise AssertionError("; ".join(problems) + f" (gaps: {table})")
