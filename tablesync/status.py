"""What a running (or stopped) system's sync looks like: one immutable snapshot.

Built by the engine (live state) or from the local store alone (``sync status`` with no
engine running). The web page, ``/api/status``, ``/metrics``, ``/healthz`` and the CLI all
render this one type. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tablesync.causes import EXIT_CODES, RED_CAUSES, Cause, describe
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
    cause: str = Cause.NONE.value       # tablesync.causes.Cause of the last failure
    stale: bool = False                 # store counts from an earlier read (store busy)
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
        d["indicator"], d["reasons"] = verdict(self)
        d["cause_text"] = describe(self.cause)
        return d


def verdict(s: StatusSnapshot) -> tuple[str, list[str]]:
    """The one mapping behind the indicator, ``/healthz`` and ``sync status``'s exit code:
    the colour and, when red, why (docs/operations.md, "Causes and what they mean")."""
    reasons: list[str] = []
    cause = Cause(s.cause) if s.cause in Cause._value2member_map_ else Cause.NONE
    if s.reauth_required:
        reasons.append("re-authentication required (tablesync login)")
    if cause in RED_CAUSES and not (cause is Cause.AUTH and s.reauth_required):
        reasons.append(describe(cause) + (f": {s.last_error}" if s.last_error else ""))
    if s.parked > 0:
        reasons.append(f"{s.parked} record(s) parked")
    if (cause is Cause.NONE and s.consecutive_errors >= REPEATED_ERRORS
            and s.state != State.DISCONNECTED.label):
        reasons.append(f"{s.consecutive_errors} failed cycles in a row")
    if s.state == State.FAILED.label:
        reasons.append("sync stopped (state Failed)")
    if not s.engine_alive and s.state != State.STOPPED.label:
        reasons.append("engine thread is not running")
    # an unreachable server takes Realtime down with it: that is "offline", not a fault
    if (s.websocket == "disconnected" and s.websocket_down_s > WEBSOCKET_GRACE_S
            and cause is not Cause.SERVER_UNREACHABLE and s.state != State.DISCONNECTED.label):
        reasons.append(f"websocket down for {s.websocket_down_s:.0f}s")
    if s.queue_depth >= QUEUE_ALERT_DEPTH:
        reasons.append(f"queue depth {s.queue_depth} >= {QUEUE_ALERT_DEPTH}")
    if reasons:
        return RED, reasons
    if s.state == State.CONNECTED.label and s.queue_depth == 0:
        return GREEN, []
    return YELLOW, []


def indicator(s: StatusSnapshot) -> str:
    """The traffic light for a snapshot (see :func:`verdict`)."""
    return verdict(s)[0]


def health(s: StatusSnapshot) -> tuple[bool, list[str]]:
    """``/healthz``: unhealthy (503) exactly when the indicator is red, with its reasons."""
    colour, reasons = verdict(s)
    return colour != RED, reasons


def exit_code(s: StatusSnapshot) -> int:
    """``tablesync sync status``'s exit code: 0 green, 1 yellow, 2 red."""
    return EXIT_CODES[verdict(s)[0]]
