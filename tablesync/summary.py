"""What one ``sync_once()`` did (:class:`SyncSummary`) and how a cycle adds to it (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SyncSummary", "note"]


@dataclass
class SyncSummary:
    """What one ``sync_once()`` did."""

    pushed: int = 0
    pulled: int = 0
    applied: int = 0
    rejected: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)
    # per table: {"pushed": n, "pulled": n, "applied": n} (tables with any of them)
    tables: dict[str, dict[str, int]] = field(default_factory=dict)


def note(summary: SyncSummary | None, *, table: str = "", pushed: int = 0, pulled: int = 0,
         applied: int = 0, rejected: int = 0, parked: int = 0, error: str = "") -> None:
    """Add one step's counts (and error) to ``summary`` (nothing when None)."""
    if summary is None:
        return
    summary.pushed += pushed
    summary.pulled += pulled
    summary.applied += applied
    summary.rejected += rejected
    summary.parked += parked
    if error:
        summary.errors.append(error)
    if table and (pushed or pulled or applied):
        counts = summary.tables.setdefault(table, {"pushed": 0, "pulled": 0, "applied": 0})
        counts["pushed"] += pushed
        counts["pulled"] += pulled
        counts["applied"] += applied
