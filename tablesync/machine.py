"""The engine's state machine, without I/O: ``SyncMachine.handle(event) -> [Instruction]``.

The engine feeds everything that happens (config found, sign-in result, websocket up or
down, timer fired, local change, push or pull result, stop) into :meth:`SyncMachine.handle`
from one consumer, and carries out the instructions it gets back (authenticate, connect
Realtime, start a push or a catch-up, schedule a timer, report the state). The machine
never sleeps, reads the clock or touches a socket, so every behaviour is a transcript
(``tests/golden/transcripts/*.json``).

States (design section 4):

* ``local_only``   no ``[supabase]`` config: the app works, changes queue.
* ``connecting``   signing in or refreshing a token.
* ``connected``    signed in, the last remote call succeeded, nothing running.
* ``syncing``      a push or a catch-up pull is running.
* ``disconnected`` the remote is unreachable; a retry is scheduled (``offline`` once the
                   backoff is exhausted: then the retry is slow). When the failure was
                   "no answer at all" (connection refused, timeout), a cheap probe runs
                   every ``probe_interval`` and a Realtime rejoin counts as one: the first
                   success retries at once, so sync resumes within seconds of the backend
                   coming back, whatever the backoff delay.
* ``failed``       sync stopped; ``reauth_required`` when the refresh token is dead or the
                   credentials are refused (after ``tablesync login`` the engine feeds
                   ``sync_requested`` by itself, as "Sync now" does).

Rules: one cycle (push or pull) at a time; a trigger that arrives while one runs is
remembered and runs right after (never concurrently, never lost); a local change is
debounced (the first change arms the timer, later ones do not push it back, so a steady
write stream still syncs every ``debounce`` seconds); a push that reports a backlog is
followed at once by the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tablesync.backoff import Backoff
from tablesync.causes import Cause, describe
from tablesync.events import (  # the vocabulary, re-exported: tablesync.machine is its home
    AUTH, AUTH_DEAD, AUTH_DUPLICATE, AUTH_REJECTED, AUTH_TRANSIENT, DEBOUNCE_TIMER, FORBIDDEN,
    OK, PAYLOAD, POLL_TIMER, PROBE_TIMER, PUSH_TIMER, REFRESH_TIMER, RETRY_TIMER, TIMERS,
    TRANSIENT, AuthFailed, AuthFailure, AuthOk, Authenticate, CancelTimer, ConfigAbsent,
    ConfigPresent, ConnectRealtime, DisconnectRealtime, Event, GoOffline, Instruction,
    LocalChange, Probe, ProbeResult, PullResult, PushResult, ReportState, Resubscribed,
    RunKind, RunOutcome, ScheduleTimer, Shutdown, StartCatchUp, StartPush, State, Stop,
    SyncRequested, Tick, UpdateToken, WsDown, WsUp, event_from_dict,
)

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
    "MachineSettings",
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
    "SyncMachine",
    "SyncRequested",
    "TIMERS",
    "TRANSIENT",
    "Tick",
    "UpdateToken",
    "WsDown",
    "WsUp",
    "event_from_dict",
]


# -------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class MachineSettings:
    """Timing knobs (seconds), from ``[sync]``.

    Args:
        interval: push period without other triggers.
        debounce: delay between a local change and its push.
        poll_interval: catch-up period while Realtime is off or down.
        realtime: use Realtime at all.
        refresh_margin: refresh the token this long before it expires (at most half its life).
        min_refresh: never schedule a refresh sooner than this.
        probe_interval: while the backend does not answer, probe it this often (0: never).
    """

    interval: float = 10.0
    debounce: float = 0.05
    poll_interval: float = 30.0
    realtime: bool = True
    refresh_margin: float = 90.0
    min_refresh: float = 1.0
    probe_interval: float = 0.0


@dataclass
class _Flags:
    running: RunKind | None = None
    push_pending: bool = False
    pull_pending: bool = False
    debounce_armed: bool = False
    realtime_live: bool = False
    offline: bool = False
    reauth_required: bool = False
    auth_retried: bool = False          # an auth error already caused one refresh
    probing: bool = False               # disconnected without an answer: probe timer armed
    auth_down: bool = False             # the last failure was signing in: retry signs in
    stopped: bool = False
    reason: str = ""


@dataclass
class SyncMachine:
    """Sans-I/O engine control: feed events to :meth:`handle`, execute the result."""

    settings: MachineSettings = field(default_factory=MachineSettings)
    backoff: Backoff = field(default_factory=Backoff)
    state: State = State.DISCONNECTED
    flags: _Flags = field(default_factory=_Flags)

    def handle(self, event: Event) -> list[Instruction]:
        """Process one event; return what the engine must do, in order."""
        if self.flags.stopped:
            return []
        before = self._snapshot()
        out: list[Instruction] = []
        handler = getattr(self, "_on_" + event.kind)
        handler(event, out)
        if self._snapshot() != before:
            out.append(self._report())
        return out

    # -- reporting

    def _snapshot(self) -> tuple[Any, ...]:
        f = self.flags
        return (self.state, f.offline, f.reauth_required, f.realtime_live, f.reason)

    def _report(self) -> ReportState:
        f = self.flags
        return ReportState(self.state.value, f.reason, f.offline, f.reauth_required,
                           f.realtime_live)

    def _set(self, state: State, reason: str = "") -> None:
        self.state, self.flags.reason = state, reason

    @property
    def _online(self) -> bool:
        return self.state in (State.CONNECTED, State.SYNCING)

    # -- config

    def _on_config_present(self, _: Event, out: list[Instruction]) -> None:
        if self.state in (State.LOCAL_ONLY, State.DISCONNECTED, State.FAILED):
            self._begin_auth(out, refresh=False)

    def _on_config_absent(self, _: Event, out: list[Instruction]) -> None:
        self._cancel_all(out)
        out.append(DisconnectRealtime())
        self.flags = _Flags()
        self.backoff.reset()
        self._set(State.LOCAL_ONLY, "no [supabase] config")

    # -- auth

    def _begin_auth(self, out: list[Instruction], *, refresh: bool) -> None:
        self.flags.reauth_required = False
        self.flags.auth_down = False
        self._set(State.CONNECTING, "refreshing token" if refresh else "signing in")
        out.append(Authenticate(refresh=refresh))

    def _on_auth_ok(self, ev: AuthOk, out: list[Instruction]) -> None:
        margin = min(self.settings.refresh_margin, ev.expires_in / 2)
        delay = max(self.settings.min_refresh, ev.expires_in - margin)
        out.append(ScheduleTimer(REFRESH_TIMER, delay))
        if self.state is not State.CONNECTING:
            out.append(UpdateToken())      # a background refresh: nothing else changes
            return
        self._mark_online(out)
        if self.settings.realtime and not self.flags.realtime_live:
            out.append(ConnectRealtime())
        out.append(ScheduleTimer(PUSH_TIMER, self.settings.interval))
        # catch up every poll_interval, Realtime live or not: Realtime delivers at most
        # once and drops changes above the project's rate limit, so it is only a hint
        out.append(ScheduleTimer(POLL_TIMER, self.settings.poll_interval))
        if not self.settings.realtime:
            self.flags.pull_pending = True
        self.flags.push_pending = True     # drain whatever queued while we were away
        self._start_next(out)

    def _on_auth_failed(self, ev: AuthFailed, out: list[Instruction]) -> None:
        if ev.reason == AUTH_TRANSIENT:
            self.flags.auth_down = True
            self._fail_transient(out, ev.retry_after, "auth server unreachable",
                                 unreachable=ev.unreachable)
            return
        self._cancel_all(out)
        out.append(DisconnectRealtime())
        f = self.flags
        f.push_pending |= f.running is RunKind.PUSH
        f.pull_pending |= f.running is RunKind.PULL
        if ev.reason == AUTH_DUPLICATE:
            f.running, f.realtime_live = None, False
            self._set(State.FAILED, ev.detail or "another replica runs with this system id")
            return
        f.running, f.realtime_live, f.reauth_required = None, False, True
        self._set(State.FAILED, "re-auth required: run `tablesync login`")

    # -- realtime

    def _on_ws_up(self, _: Event, out: list[Instruction]) -> None:
        if not self.settings.realtime or self.state in (State.LOCAL_ONLY, State.FAILED):
            return
        self.flags.realtime_live = True
        # realtime is a hint: catch up after every join, then every poll_interval
        out.append(ScheduleTimer(POLL_TIMER, self.settings.poll_interval))
        self.flags.pull_pending = True
        if self._online:
            self._start_next(out)
        elif self.state is State.DISCONNECTED and self.flags.probing:
            self._reachable(out)           # the backend answers again: retry now

    def _on_resubscribed(self, _: Event, out: list[Instruction]) -> None:
        """A live channel got "Subscribed to PostgreSQL" again (the server's change capture
        restarted): changes in between may be lost, so catch up."""
        if self.state in (State.LOCAL_ONLY, State.FAILED):
            return
        self._want(out, pull=True)

    def _on_ws_down(self, _: Event, out: list[Instruction]) -> None:
        if not self.flags.realtime_live:
            return
        self.flags.realtime_live = False
        out.append(ScheduleTimer(POLL_TIMER, self.settings.poll_interval))

    # -- triggers

    def _on_tick(self, ev: Tick, out: list[Instruction]) -> None:
        name = ev.name
        if self.state in (State.FAILED, State.LOCAL_ONLY):
            return                         # a stale timer: everything was cancelled
        if name == REFRESH_TIMER:
            out.append(Authenticate(refresh=True))
            return
        if name == RETRY_TIMER:
            self._on_retry(out)
            return
        if name == PROBE_TIMER:
            if self.state is State.DISCONNECTED and self.flags.probing:
                out.append(Probe())
            return
        if name == PUSH_TIMER:
            out.append(ScheduleTimer(PUSH_TIMER, self.settings.interval))
            self._want(out, push=True)
        elif name == DEBOUNCE_TIMER:
            self.flags.debounce_armed = False
            self._want(out, push=True)
        elif name == POLL_TIMER:
            out.append(ScheduleTimer(POLL_TIMER, self.settings.poll_interval))
            self._want(out, pull=True)

    def _on_local_change(self, _: Event, out: list[Instruction]) -> None:
        if not self._online:
            self.flags.push_pending |= self.state is not State.LOCAL_ONLY
            return
        if self.flags.debounce_armed:
            return
        self.flags.debounce_armed = True
        out.append(ScheduleTimer(DEBOUNCE_TIMER, self.settings.debounce))

    def _on_sync_requested(self, _: Event, out: list[Instruction]) -> None:
        if self.state is State.LOCAL_ONLY:
            return
        if self.state is State.FAILED:
            self._begin_auth(out, refresh=False)
            return
        if self.state is State.DISCONNECTED:
            out.append(CancelTimer(RETRY_TIMER))
            self.flags.push_pending = self.flags.pull_pending = True
            self._on_retry(out)
            return
        self._want(out, push=True, pull=True)

    def _want(self, out: list[Instruction], *, push: bool = False, pull: bool = False) -> None:
        self.flags.push_pending |= push
        self.flags.pull_pending |= pull
        if self._online:
            self._start_next(out)

    def _start_next(self, out: list[Instruction]) -> None:
        f = self.flags
        if f.running is not None:
            return
        if f.push_pending:
            f.push_pending, f.running = False, RunKind.PUSH
            out.append(StartPush())
        elif f.pull_pending:
            f.pull_pending, f.running = False, RunKind.PULL
            out.append(StartCatchUp())
        else:
            self._set(State.CONNECTED)
            return
        self._set(State.SYNCING)

    # -- results

    def _on_push_result(self, ev: PushResult, out: list[Instruction]) -> None:
        if self.flags.running is not RunKind.PUSH:
            return
        self._finish(ev.outcome, ev.retry_after, out, push=True, backlog=ev.backlog,
                     unreachable=ev.unreachable, cause=ev.cause)

    def _on_pull_result(self, ev: PullResult, out: list[Instruction]) -> None:
        if self.flags.running is not RunKind.PULL:
            return
        self._finish(ev.outcome, ev.retry_after, out, push=False, backlog=False,
                     unreachable=ev.unreachable, cause=ev.cause)

    def _on_probe_result(self, ev: ProbeResult, out: list[Instruction]) -> None:
        if self.state is not State.DISCONNECTED or not self.flags.probing:
            return
        if ev.reachable:
            self._reachable(out)
        else:
            out.append(ScheduleTimer(PROBE_TIMER, self.settings.probe_interval))

    def _reachable(self, out: list[Instruction]) -> None:
        """The backend answers again (a probe, or Realtime rejoined): retry now."""
        out.append(CancelTimer(RETRY_TIMER))
        self._stop_probing(out)
        self._on_retry(out)

    def _stop_probing(self, out: list[Instruction]) -> None:
        if self.flags.probing:
            self.flags.probing = False
            out.append(CancelTimer(PROBE_TIMER))

    def _finish(self, outcome: RunOutcome, retry_after: float | None, out: list[Instruction],
                *, push: bool, backlog: bool, unreachable: bool = False,
                cause: str = "") -> None:
        f = self.flags
        f.running = None
        if outcome in (OK, FORBIDDEN):          # forbidden rows are parked by the engine
            f.auth_retried = False
            self._mark_online(out)
            if push and backlog:
                f.push_pending = True
            self._start_next(out)
            return
        if push:
            f.push_pending = True
        else:
            f.pull_pending = True
        if outcome == AUTH:
            if f.auth_retried:
                self._on_auth_failed(AuthFailed(AUTH_REJECTED), out)
                return
            f.auth_retried = True
            self._begin_auth(out, refresh=True)
            return
        reason = "malformed response from the server" if outcome == PAYLOAD else "server unreachable"
        if cause and cause != Cause.SERVER_UNREACHABLE.value:
            reason = describe(cause) or reason   # e.g. "local database locked": retried too
        self._fail_transient(out, retry_after, reason,
                             unreachable=unreachable and outcome == TRANSIENT)

    def _mark_online(self, out: list[Instruction]) -> None:
        self._stop_probing(out)
        if self.flags.offline:
            self.flags.offline = False
        self.backoff.reset()
        self._set(State.CONNECTED)

    def _fail_transient(self, out: list[Instruction], retry_after: float | None,
                        reason: str, *, unreachable: bool = False) -> None:
        delay = self.backoff.next_delay(retry_after)
        out.append(ScheduleTimer(RETRY_TIMER, delay))
        probe = self.settings.probe_interval
        if unreachable and 0 < probe < delay and retry_after is None:
            self.flags.probing = True
            out.append(ScheduleTimer(PROBE_TIMER, probe))
        else:                              # the server answers (5xx, 429): plain backoff
            self._stop_probing(out)
        if self.backoff.offline and not self.flags.offline:
            self.flags.offline = True
            out.append(GoOffline(delay))
        self._set(State.DISCONNECTED, reason)

    def _on_retry(self, out: list[Instruction]) -> None:
        if self.state is State.DISCONNECTED:
            if self.flags.auth_down:
                self._begin_auth(out, refresh=False)
                return
            self._set(State.CONNECTED)
            self._start_next(out)

    # -- stop

    def _on_stop(self, _: Event, out: list[Instruction]) -> None:
        self._cancel_all(out)
        out.append(DisconnectRealtime())
        out.append(Shutdown())
        self.flags.stopped = True
        self.flags.realtime_live = False
        self.flags.running = None
        if self.state is not State.LOCAL_ONLY:
            self._set(State.DISCONNECTED, "stopped")

    def _cancel_all(self, out: list[Instruction]) -> None:
        out.extend(CancelTimer(name) for name in TIMERS)
        self.flags.debounce_armed = False
        self._stop_probing(out)
