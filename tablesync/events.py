"""The engine's vocabulary, without behaviour: states, run kinds and outcomes, the events
the engine feeds to :class:`tablesync.machine.SyncMachine` and the instructions it gets back
(all frozen dataclasses with a transcript form, ``tests/golden/transcripts/*.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, ClassVar

__all__ = [
    "AUTH",
    "AUTH_DEAD",
    "AUTH_DUPLICATE",
    "AUTH_REJECTED",
    "AUTH_TRANSIENT",
    "AuthFailed",
    "AuthFailure",
    "AuthOk",
    "Authenticate",
    "CancelTimer",
    "ConfigAbsent",
    "ConfigPresent",
    "ConnectRealtime",
    "DEBOUNCE_TIMER",
    "DisconnectRealtime",
    "Event",
    "FORBIDDEN",
    "GoOffline",
    "Instruction",
    "LocalChange",
    "OK",
    "PAYLOAD",
    "POLL_TIMER",
    "PROBE_TIMER",
    "PUSH_TIMER",
    "Probe",
    "ProbeResult",
    "PullResult",
    "PushResult",
    "REFRESH_TIMER",
    "RETRY_TIMER",
    "ReportState",
    "Resubscribed",
    "RunKind",
    "RunOutcome",
    "ScheduleTimer",
    "Shutdown",
    "StartCatchUp",
    "StartPush",
    "State",
    "Stop",
    "SyncRequested",
    "TIMERS",
    "TRANSIENT",
    "Tick",
    "UpdateToken",
    "WsDown",
    "WsUp",
    "event_from_dict",
]


class State(str, Enum):
    """Engine states: the value in transcripts and ``EngineStatus``; :attr:`label` is the
    name users see (``sync status``, the status page, the design's LocalOnly ... Failed)."""

    LOCAL_ONLY = "local_only"
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    SYNCING = "syncing"
    FAILED = "failed"
    STOPPED = "stopped"              # the engine thread is not running (never a machine state)

    @property
    def label(self) -> str:
        return "".join(part.capitalize() for part in self.value.split("_"))


class RunKind(str, Enum):
    """The cycle that is running: one at a time."""

    PUSH = "push"
    PULL = "pull"


class RunOutcome(str, Enum):
    """How a push batch or a catch-up pull ended (:class:`PushResult`, :class:`PullResult`)."""

    OK = "ok"
    TRANSIENT = "transient"          # network, 5xx, 429: retry with backoff
    AUTH = "auth"                    # a 401 the REST client's own refresh did not cure
    FORBIDDEN = "forbidden"          # a whole batch refused (403): its records are parked
    PAYLOAD = "payload"              # a malformed answer: retried like a transient failure


class AuthFailure(str, Enum):
    """Why a sign-in or refresh failed (:class:`AuthFailed`)."""

    TRANSIENT = "transient"          # network, 5xx, 429
    REJECTED = "rejected"            # bad credentials
    DEAD = "dead"                    # refresh token revoked or reused
    DUPLICATE = "duplicate"          # another replica holds this system id (``detail``)


# Timer names (the engine keeps one pending timer per name).
PUSH_TIMER = "push"
DEBOUNCE_TIMER = "debounce"
RETRY_TIMER = "retry"
POLL_TIMER = "poll"
REFRESH_TIMER = "refresh"
PROBE_TIMER = "probe"
TIMERS = (PUSH_TIMER, DEBOUNCE_TIMER, RETRY_TIMER, POLL_TIMER, REFRESH_TIMER)
# (PROBE_TIMER is armed only while probing, and cancelled with that flag)

# Outcomes of a push or pull as reported by the engine.
OK, TRANSIENT, AUTH, FORBIDDEN, PAYLOAD = (RunOutcome.OK, RunOutcome.TRANSIENT, RunOutcome.AUTH,
                                          RunOutcome.FORBIDDEN, RunOutcome.PAYLOAD)
# Kinds of auth failure.
AUTH_TRANSIENT, AUTH_REJECTED, AUTH_DEAD, AUTH_DUPLICATE = (
    AuthFailure.TRANSIENT, AuthFailure.REJECTED, AuthFailure.DEAD, AuthFailure.DUPLICATE)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """Something that happened; ``kind`` is its name in transcripts."""

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        Event.registry[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ConfigPresent(Event):
    """``[supabase]`` is configured (at start, or added later)."""

    kind: ClassVar[str] = "config_present"


@dataclass(frozen=True)
class ConfigAbsent(Event):
    """No ``[supabase]`` config (at start, or removed): local-only mode."""

    kind: ClassVar[str] = "config_absent"


@dataclass(frozen=True)
class AuthOk(Event):
    """Signed in or refreshed; the access token lives ``expires_in`` more seconds."""

    kind: ClassVar[str] = "auth_ok"
    expires_in: float = 3600.0


@dataclass(frozen=True)
class AuthFailed(Event):
    """Sign-in/refresh failed: ``transient`` (network, 5xx, 429), ``rejected``
    (bad credentials), ``dead`` (refresh token revoked or reused) or ``duplicate`` (another
    replica holds this system id; ``detail`` is the message)."""

    kind: ClassVar[str] = "auth_failed"
    reason: AuthFailure = AUTH_TRANSIENT
    retry_after: float | None = None
    unreachable: bool = False
    detail: str = ""


@dataclass(frozen=True)
class WsUp(Event):
    """Every table's Realtime subscription is live ("Subscribed to PostgreSQL")."""

    kind: ClassVar[str] = "ws_up"


@dataclass(frozen=True)
class Resubscribed(Event):
    """A live subscription was confirmed again ("Subscribed to PostgreSQL" a second time,
    without the channel closing): the server's change capture restarted."""

    kind: ClassVar[str] = "resubscribed"


@dataclass(frozen=True)
class WsDown(Event):
    """The websocket or a subscription dropped; the client reconnects by itself."""

    kind: ClassVar[str] = "ws_down"


@dataclass(frozen=True)
class Tick(Event):
    """The timer ``name`` fired."""

    kind: ClassVar[str] = "tick"
    name: str = PUSH_TIMER


@dataclass(frozen=True)
class LocalChange(Event):
    """The app wrote to a synced table (a new ``sync_queue`` entry)."""

    kind: ClassVar[str] = "local_change"


@dataclass(frozen=True)
class SyncRequested(Event):
    """``sync now``: push, then catch up, now (also retries a failed/offline engine)."""

    kind: ClassVar[str] = "sync_requested"


@dataclass(frozen=True)
class PushResult(Event):
    """A push batch finished with ``outcome``; ``backlog`` says more entries wait."""

    kind: ClassVar[str] = "push_result"
    outcome: RunOutcome = OK
    backlog: bool = False
    retry_after: float | None = None
    unreachable: bool = False           # transient: no answer at all (not a 5xx or 429)
    cause: str = ""                     # a failure's tablesync.causes.Cause value


@dataclass(frozen=True)
class PullResult(Event):
    """A catch-up pull finished with ``outcome``."""

    kind: ClassVar[str] = "pull_result"
    outcome: RunOutcome = OK
    retry_after: float | None = None
    unreachable: bool = False
    cause: str = ""                     # a failure's tablesync.causes.Cause value


@dataclass(frozen=True)
class ProbeResult(Event):
    """A :class:`Probe` finished: ``reachable`` when the backend answered at all."""

    kind: ClassVar[str] = "probe_result"
    reachable: bool = False


@dataclass(frozen=True)
class Stop(Event):
    """Shut down: cancel timers, close the websocket; later events are ignored."""

    kind: ClassVar[str] = "stop"


def event_from_dict(data: dict[str, Any]) -> Event:
    """Build an event from its transcript form ``{"event": kind, ...fields}``."""
    data = dict(data)
    kind = data.pop("event", None)
    cls = Event.registry.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"event {kind!r}: unknown field(s) {sorted(unknown)}")
    if "outcome" in data and cls in (PushResult, PullResult):
        data["outcome"] = RunOutcome(data["outcome"])
    if "reason" in data and cls is AuthFailed:
        data["reason"] = AuthFailure(data["reason"])
    return cls(**data)


# --------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    """Something the engine must do; ``do`` is its name in transcripts."""

    do: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"do": self.do, **asdict(self)}


@dataclass(frozen=True)
class Authenticate(Instruction):
    """Sign in (stored tokens or email/password) or, with ``refresh``, refresh the token."""

    do: ClassVar[str] = "authenticate"
    refresh: bool = False


@dataclass(frozen=True)
class ConnectRealtime(Instruction):
    do: ClassVar[str] = "connect_realtime"


@dataclass(frozen=True)
class DisconnectRealtime(Instruction):
    do: ClassVar[str] = "disconnect_realtime"


@dataclass(frozen=True)
class UpdateToken(Instruction):
    """Hand the refreshed access token to the live Realtime channels."""

    do: ClassVar[str] = "update_token"


@dataclass(frozen=True)
class StartPush(Instruction):
    """Push one batch of pending changes; answer with :class:`PushResult`."""

    do: ClassVar[str] = "start_push"


@dataclass(frozen=True)
class StartCatchUp(Instruction):
    """Run a catch-up pull over REST; answer with :class:`PullResult`."""

    do: ClassVar[str] = "start_catch_up"


@dataclass(frozen=True)
class Probe(Instruction):
    """Check cheaply whether the backend answers; answer with :class:`ProbeResult`."""

    do: ClassVar[str] = "probe"


@dataclass(frozen=True)
class ScheduleTimer(Instruction):
    """(Re)arm the timer ``name`` to fire a :class:`Tick` in ``delay`` seconds."""

    do: ClassVar[str] = "schedule_timer"
    name: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class CancelTimer(Instruction):
    do: ClassVar[str] = "cancel_timer"
    name: str = ""


@dataclass(frozen=True)
class GoOffline(Instruction):
    """Retries are exhausted: record offline mode; next try in ``retry_in`` seconds."""

    do: ClassVar[str] = "go_offline"
    retry_in: float = 0.0


@dataclass(frozen=True)
class ReportState(Instruction):
    """The state (or a flag) changed: publish it to status, metrics and logs."""

    do: ClassVar[str] = "report_state"
    state: str = ""
    reason: str = ""
    offline: bool = False
    reauth_required: bool = False
    realtime: bool = False


@dataclass(frozen=True)
class Shutdown(Instruction):
    """Release everything (after :class:`Stop`)."""

    do: ClassVar[str] = "shutdown"
