"""What a running (or stopped) system's sync looks like: one immutable snapshot.

Built by the engine (live state) or from the local store alone (``sync status`` with no
engine running). The web page, ``/api/status``, ``/metrics``, ``/healthz`` and the CLI all
render this one type. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tablesync.machine import State

GREEN, YELLOW, RED = "green", "yellow", "red"

# Health thresholds (design section 6).
QUEUE_ALERT_DEPTH = 1000
WEBSOCKET_GRACE_S = 30.0
REPEATED_ERRORS = 3


@dataclass(frozen=True)
class StatusSnapshot:
    """A point-in-time view of one system's sync.

    ``state`` is the engine state name (LocalOnly, Disconnected, Connecting, Connected,
    Syncing, Failed) or ``Stopped`` when no engine runs. Times are ISO-8601 UTC strings.
    """

    system_id: str
    state: str
    engine_alive: bool
    queue_depth: int
    oldest_queued_at: str | None = None
    oldest_queued_age_s: float | None = None
    last_sync_at: str | None = None
    parked: int = 0
    conflicts_24h: int = 0
    websocket: str = "off"  # "connected" | "disconnected" | "off"
    websocket_down_s: float = 0.0
    reauth_required: bool = False
    consecutive_errors: int = 0
    last_error: str | None = None
    generated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # the status page's detail (docs/operations.md); versions and HLCs are never here
    backend_url: str | None = None
    refused: int = 0                  # server rows this replica could not apply
    # table -> {queued, queued_records, parked, refused, pushed, pulled}
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    # progress of the running push drain / catch-up: started_at, done, remaining, total,
    # rate_per_s, eta_s (None when unknown); None when none runs
    push: dict[str, Any] | None = None
    pull: dict[str, Any] | None = None
    per_minute: list[dict[str, Any]] = field(default_factory=list)  # minute, pushed, pulled
    next_retry_at: str | None = None

    @property
    def indicator(self) -> str:
        """green: connected and drained; yellow: syncing/backlog/offline; red: needs a human."""
        return indicator(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["indicator"] = self.indicator
        return d


def indicator(s: StatusSnapshot) -> str:
    """The traffic light for a snapshot (see :class:`StatusSnapshot`)."""
    # Failed cycles while Disconnected are the engine retrying an unreachable backend:
    # that is "offline and queueing" (yellow), not a fault a human must look at.
    repeated = (s.consecutive_errors >= REPEATED_ERRORS
                and s.state != State.DISCONNECTED.label)
    if s.reauth_required or s.parked > 0 or repeated:
        return RED
    if s.state == State.FAILED.label or (not s.engine_alive and s.state != State.STOPPED.label):
        return RED
    if s.state == State.CONNECTED.label and s.queue_depth == 0:
        return GREEN
    return YELLOW


def health(s: StatusSnapshot) -> tuple[bool, list[str]]:
    """``/healthz``: unhealthy when the engine is dead, the websocket has been down past
    the grace period, or the queue holds :data:`QUEUE_ALERT_DEPTH` changes or more."""
    reasons: list[str] = []
    if not s.engine_alive:
        reasons.append("engine thread is not running")
    if s.websocket == "disconnected" and s.websocket_down_s > WEBSOCKET_GRACE_S:
        reasons.append(f"websocket down for {s.websocket_down_s:.0f}s")
    if s.queue_depth >= QUEUE_ALERT_DEPTH:
        reasons.append(f"queue depth {s.queue_depth} >= {QUEUE_ALERT_DEPTH}")
    return (not reasons, reasons)
