"""The sync engine: the state machine's instructions carried out with real I/O.

``Engine`` owns one asyncio loop in a background thread (``start()``/``stop()``) or runs one
cycle in the caller's thread (``sync_once()``). All decisions come from
:class:`~tablesync.machine.SyncMachine`; this module only executes them:

* events go through one queue consumer (``_feed`` is thread-safe);
* blocking work (REST calls, SQLite) runs in a one-thread executor, so pushes, pulls and
  sign-ins never overlap; Realtime changes are applied in a second one-thread executor so a
  long push drain does not delay them;
* local changes are noticed by watching ``max(sync_queue.id)`` on a private read
  connection every ``watch_interval`` seconds (the app writes with plain sqlite3, maybe in
  another process), and fed to the machine as :class:`~tablesync.machine.LocalChange`.

Push and pull are in :mod:`tablesync.cycles`; the status snapshot in :mod:`tablesync.snapshot`;
Realtime changes in :mod:`tablesync.hints`; sign-in in :mod:`tablesync.signin`. Every failure
is noted with its cause (:mod:`tablesync.causes`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tablesync.backoff import Backoff
from tablesync.causes import Cause, classify
from tablesync.errors import DuplicateReplicaError, TablesyncError, TransientRemoteError
from tablesync.cycles import Cycles, SyncSummary
from tablesync.hints import RealtimeApply
from tablesync.login_watch import LOGIN_POLL, LoginWatch
from tablesync.replica import ReplicaClaim
from tablesync.signin import authenticate
from tablesync.watch import watch_queue
from tablesync.machine import (
    AUTH_DUPLICATE, AUTH_TRANSIENT, AuthFailed, AuthOk, Authenticate, CancelTimer,
    ConfigAbsent, ConfigPresent, ConnectRealtime, DisconnectRealtime, Event, GoOffline,
    Instruction, LocalChange, MachineSettings, Probe, ProbeResult, PullResult, PushResult,
    ReportState, Resubscribed, RunOutcome,
    ScheduleTimer, Shutdown, StartCatchUp, StartPush, State, Stop, SyncMachine,
    SyncRequested, Tick, UpdateToken, WsDown, WsUp,
)
from tablesync.metrics import Metrics
from tablesync.model import EXITS_TABLE, Change
from tablesync.project import Project
from tablesync.remote.base import ChangeEvent, Remote, realtime_channels
from tablesync.session import Session
from tablesync.snapshot import StatusReader, store_snapshot
from tablesync.status import StatusSnapshot
from tablesync.store import LocalStore, ResetResult
from tablesync.vault import Secret

log = logging.getLogger("tablesync.engine")

DEFAULT_WATCH_INTERVAL = 0.02
Callback = Callable[[Change], None]
StateCallback = Callable[["EngineStatus"], None]

__all__ = ["Engine", "EngineStatus", "SyncSummary", "store_snapshot"]

SNAPSHOT_TTL = 0.2


@dataclass(frozen=True)
class EngineStatus:
    """What ``sync status`` and the status page show about the running engine."""

    state: str = State.DISCONNECTED.value
    reason: str = ""
    offline: bool = False
    reauth_required: bool = False
    realtime: bool = False
    last_error: str = ""


class Engine:
    """Keeps one SQLite database in sync with the remote.

    Args:
        project: config + table specs.
        store: the local store (default: opened from the config's database path).
        remote: the REST client; None = local-only mode (see :func:`tablesync.daemon.
            build_engine` for the wiring from ``[supabase]``).
        session: the token source used by ``remote`` (sign-in, refresh, vault).
        realtime_factory: ``factory(url, anon_key, channels, on_change=, on_status=,
            access_token=)`` building a :class:`~tablesync.remote.base.Subscriber`;
            None = no Realtime (catch-up by polling only).
        watch_interval: how often to look for new local changes (seconds).
        backoff: retry policy (default: ``[sync] max_retries``, 1-2-4-8 s, offline 60 s).
        own_remote: close ``remote`` in :meth:`close`.
    """

    def __init__(self, project: Project, *, store: LocalStore | None = None,
                 remote: Remote | None = None, session: Session | None = None,
                 realtime_factory: Callable[..., Any] | None = None,
                 watch_interval: float = DEFAULT_WATCH_INTERVAL,
                 backoff: Backoff | None = None, own_remote: bool = False) -> None:
        self.project = project
        cfg = project.config
        self.store = store or LocalStore.open(project)
        self._own_remote = own_remote
        self.remote, self.session = remote, session
        if session is not None:
            session.on_refresh = self._token_refreshed
        s = cfg.sync
        self.machine = SyncMachine(
            settings=MachineSettings(interval=s.interval, debounce=s.debounce,
                                     poll_interval=s.poll_interval,
                                     probe_interval=s.probe_interval,
                                     realtime=s.realtime and realtime_factory is not None),
            backoff=backoff or Backoff(max_retries=s.max_retries))
        self.batch_size = s.batch_size
        self.watch_interval = watch_interval
        self._realtime_factory = realtime_factory
        self._callbacks: dict[str, list[Callback]] = {}
        self._state_callbacks: list[StateCallback] = []
        self.status = EngineStatus()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[Event] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._io = ThreadPoolExecutor(1, thread_name_prefix="tablesync-io")
        self._rt_io = ThreadPoolExecutor(1, thread_name_prefix="tablesync-rt")
        self._realtime: Any = None
        self._realtime_task: asyncio.Task[Any] | None = None
        self._live: set[str] = set()
        self._started, self._done = threading.Event(), threading.Event()
        self._metrics = Metrics()
        self.cycles = (Cycles(project, self.store, remote, batch_size=self.batch_size,
                              metrics=self._metrics, notify=self._notify,
                              on_error=self._set_error) if remote is not None else None)
        self._errors_in_row = 0
        self._errors_noted = 0                  # messages given to _set_error so far
        self.cause = Cause.NONE                 # of the last failure (tablesync.causes)
        self._cycle_cause = Cause.NONE          # noted by the running cycle
        self._hints = RealtimeApply(project, self.store, self.cycles, metrics=self._metrics,
                                    notify=self._notify, catch_up=self._catch_up_for)
        path = self.store.path
        self._reader = StatusReader(path, project) if path else None
        self._login = LoginWatch(getattr(getattr(session, "vault", None), "path", None))
        self._ws_down_since: float | None = None
        self._snap: tuple[float, StatusSnapshot] | None = None
        self.claim = ReplicaClaim(remote, self.store, cfg.system.id)

    # ------------------------------------------------------------------ public API

    def on(self, table: str, callback: Callback) -> None:
        """Call ``callback(change)`` for every remote change applied to ``table``."""
        if table not in {t.name for t in self.project.tables}:
            raise TablesyncError(f"on(): {table!r} is not a synced table")
        self._callbacks.setdefault(table, []).append(callback)

    def on_state(self, callback: StateCallback) -> None:
        """Call ``callback(status)`` whenever the engine's state changes."""
        self._state_callbacks.append(callback)

    def start(self) -> None:
        """Run the engine in a background thread (returns at once)."""
        if self._thread is not None:
            raise TablesyncError("engine already started")
        self._thread = threading.Thread(target=self._run_thread, name="tablesync-engine",
                                        daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread cleanly (idempotent)."""
        if self._thread is None:
            return
        self._feed(Stop())
        self._done.wait(timeout)
        self._thread.join(timeout)
        self._thread = None

    def sync_now(self) -> None:
        """Ask the running engine to push and catch up now."""
        self._feed(SyncRequested())

    # ------------------------------------------------- StatusProvider (web page)

    def snapshot(self) -> StatusSnapshot:
        """The current status for the page, ``/metrics`` and ``sync status``."""
        now = time.monotonic()
        if self._snap is not None and now - self._snap[0] < SNAPSHOT_TTL:
            return self._snap[1]
        alive = self._thread is not None and self._thread.is_alive()
        # ended without stop(): it crashed (red), unlike a stopped engine
        died = (self._thread is not None and not alive and self._started.is_set()
                and not self.machine.flags.stopped)
        st = self.status
        if not alive:
            websocket = "off"
        elif self.machine.settings.realtime and self.remote is not None:
            websocket = "connected" if st.realtime else "disconnected"
        else:
            websocket = "off"
        if websocket == "disconnected":
            self._ws_down_since = self._ws_down_since or now
        else:
            self._ws_down_since = None
        live: dict[str, Any] = dict(
            state=State(st.state).label if alive or died else State.STOPPED.label,
            engine_alive=alive, websocket=websocket,
            websocket_down_s=now - self._ws_down_since if self._ws_down_since else 0.0,
            reauth_required=st.reauth_required, consecutive_errors=self._errors_in_row,
            last_error=st.last_error or None, cause=self.cause.value)
        # never the store's lock: it may be held for a write waiting on a locked database
        snap = self._metrics.activity.decorate(
            self._reader.snapshot(self.project.config.system.id, **live)
            if self._reader is not None
            else store_snapshot(self.store, self.project.config.system.id, **live))
        self._snap = (now, snap)
        return snap

    def conflicts(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` conflicts (table, record_id, winner, loser, ...)."""
        return (self._reader or self.store).conflicts(limit)

    def request_sync(self) -> None:
        """The page's "Sync now" (never blocks)."""
        if self._thread is None:
            raise TablesyncError("the engine is not running")
        self.sync_now()

    def metrics(self) -> Metrics:
        return self._metrics

    def reset(self, *, discard_pending: bool = False,
              backup_dir: Path | None = None, timeout: float = 60.0) -> ResetResult:
        """``sync reset`` on the running engine: waits for the current cycle (the reset
        runs in the I/O thread, between cycles), clears the queue and cursors
        (:meth:`LocalStore.reset`), forgets the cached backlog, then syncs."""
        def work() -> ResetResult:
            result = self.store.reset(discard_pending=discard_pending, backup_dir=backup_dir)
            if self.cycles is not None:
                self.cycles.reset()
            return result

        if self._thread is None or self._loop is None:
            return work()
        result = self._io.submit(work).result(timeout)
        if self.remote is not None:
            self.sync_now()
        return result

    def close(self) -> None:
        """Stop, then release the system id, the store and the remote."""
        self.stop()
        self._io.shutdown(wait=True)
        self._rt_io.shutdown(wait=True)
        if self.remote is not None:
            self.claim.release()
        if self._own_remote and self.remote is not None:
            self.remote.close()
        if self._reader is not None:
            self._reader.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- one-shot sync

    def sync_once(self) -> SyncSummary:
        """Authenticate, push every pending change, catch up; in the caller's thread."""
        summary = SyncSummary()
        if self.remote is None:
            raise TablesyncError("local-only mode: no [supabase] in the config",
                                 hint="add [supabase] url/anon_key/email to sync.toml")
        if self.session is not None:
            self.session.ensure()
        fresh = self.claim.claim()
        try:
            return self._sync_once(summary)
        finally:
            if fresh:                           # not held by a running engine of this file
                self.claim.release()

    def _sync_once(self, summary: SyncSummary) -> SyncSummary:
        cycles = self._cycles()
        while True:
            result = cycles.push_batch(summary)
            if result.outcome not in (RunOutcome.OK, RunOutcome.FORBIDDEN):
                raise TransientRemoteError(f"push stopped: {result.outcome}: "
                                           f"{self.status.last_error}")
            if not result.backlog:
                break
        pull = cycles.catch_up(summary)
        if pull.outcome is not RunOutcome.OK:
            raise TransientRemoteError(f"catch-up stopped: {self.status.last_error}")
        return summary

    # -------------------------------------------------------------- event loop

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._done.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._started.set()
        watcher = asyncio.ensure_future(self._watch())
        login = asyncio.ensure_future(self._watch_login())
        first: Event = ConfigPresent() if self.remote is not None else ConfigAbsent()
        self._events.put_nowait(first)
        try:
            while True:
                event = await self._events.get()
                if await self._handle(event):
                    break
        finally:
            watcher.cancel()
            login.cancel()
            await asyncio.gather(watcher, login, return_exceptions=True)
            await self._stop_realtime()
            for handle in self._timers.values():
                handle.cancel()

    def _feed(self, event: Event) -> None:
        """Queue ``event`` for the machine (thread-safe)."""
        loop, queue = self._loop, self._events
        if loop is None or queue is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:
            pass

    async def _handle(self, event: Event) -> bool:
        for ins in self.machine.handle(event):
            if isinstance(ins, Shutdown):
                return True
            try:
                await self._execute(ins)
            except Exception as exc:  # the daemon loop is the one place that catches
                log.exception("engine: %s failed", ins.do)
                self._set_error(f"{ins.do}: {exc}")
        return False

    async def _execute(self, ins: Instruction) -> None:
        if isinstance(ins, ScheduleTimer):
            self._schedule(ins.name, ins.delay)
        elif isinstance(ins, CancelTimer):
            self._metrics.activity.cancel(ins.name)
            handle = self._timers.pop(ins.name, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(ins, StartPush):
            self._in_io(lambda: self._timed(self._metrics.push_latency,
                                            lambda: self._cycles().push_batch(None)),
                        PushResult(RunOutcome.TRANSIENT))
        elif isinstance(ins, StartCatchUp):
            self._in_io(lambda: self._timed(self._metrics.pull_latency,
                                            lambda: self._cycles().catch_up(None)),
                        PullResult(RunOutcome.TRANSIENT))
        elif isinstance(ins, Probe):
            self._in_io(self._probe, ProbeResult(False))
        elif isinstance(ins, Authenticate):
            self._in_io(lambda: self._authenticate(ins.refresh), AuthFailed(AUTH_TRANSIENT))
        elif isinstance(ins, ConnectRealtime):
            self._start_realtime()
        elif isinstance(ins, DisconnectRealtime):
            await self._stop_realtime()
        elif isinstance(ins, UpdateToken):
            if self._realtime is not None and self.session is not None:
                token = self.session.access_token()
                if token is not None:
                    self._realtime.set_token(token)
        elif isinstance(ins, GoOffline):
            log.warning("engine: offline mode, next try in %.0f s", ins.retry_in)
        elif isinstance(ins, ReportState):
            self._report(ins)

    def _schedule(self, name: str, delay: float) -> None:
        assert self._loop is not None
        self._metrics.activity.schedule(name, delay)
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self._loop.call_later(delay, self._feed, Tick(name))

    def _cycles(self) -> Cycles:
        if self.cycles is None:
            raise TablesyncError("local-only mode: no remote to sync with")
        return self.cycles

    def _timed(self, histogram: Any, work: Callable[[], Event]) -> Event:
        t0 = time.perf_counter()
        errors = self._errors_noted
        self._cycle_cause = Cause.NONE
        result = work()
        histogram.observe(time.perf_counter() - t0)
        outcome = getattr(result, "outcome", RunOutcome.OK)
        if outcome in (RunOutcome.OK, RunOutcome.FORBIDDEN):
            if self.claim.due():
                try:
                    self.claim.claim(renew=True)
                except DuplicateReplicaError as exc:  # taken over while this one was away
                    self._set_error(str(exc))
                    return AuthFailed(AUTH_DUPLICATE, detail=str(exc))
            self._errors_in_row = 0
            self.cause = self._cycle_cause     # e.g. bad_local_row for a row parked now
            if self.status.last_error and self._errors_noted == errors:
                # recovered: the page must not keep showing old errors (an error noted by
                # this successful cycle, e.g. a record parked, stays until the next one)
                self._set_error("")
            if not getattr(result, "backlog", False):
                self._metrics.sync_cycles.inc()
                self.store.note_synced()
                self._cycles().prune_if_due()
        else:
            self._failed_cycle(getattr(result, "cause", ""))
        return result

    def _failed_cycle(self, cause: str) -> None:
        self._errors_in_row += 1
        self._metrics.sync_errors.inc()
        if cause:
            self.cause = Cause(cause)

    def _in_io(self, work: Callable[[], Event], on_crash: Event) -> None:
        """Run blocking ``work`` in the I/O thread; feed the event it returns (``on_crash``
        if it raised something unexpected, so the machine never waits forever)."""
        assert self._loop is not None

        def guarded() -> Event:
            try:
                return work()
            except Exception as exc:  # noqa: BLE001 - the daemon loop records and retries
                cause = classify(exc)
                if cause is Cause.NONE:
                    log.exception("engine: background work failed")
                else:
                    log.error("engine: %s failed (%s): %s", on_crash.kind, cause.value, exc)
                self._set_error(f"{type(exc).__name__}: {exc}", cause)
                if self.cycles is not None:
                    self.cycles.reset()         # re-read the queue on the next try
                if isinstance(on_crash, (PushResult, PullResult)):
                    self._failed_cycle(cause.value)
                    return dataclasses.replace(on_crash, cause=cause.value)
                return on_crash

        future = self._loop.run_in_executor(self._io, guarded)
        future.add_done_callback(self._io_done)

    def _io_done(self, future: asyncio.Future[Event]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._feed(future.result())

    async def _watch(self) -> None:
        """Feed LocalChange whenever new sync_queue entries appear."""
        await watch_queue(self.project.config.database_path, self.watch_interval,
                          lambda: self._feed(LocalChange()))

    async def _watch_login(self) -> None:
        """While "re-auth required", a new login in the token store resumes sync."""
        if self._login.path is None:
            return
        while True:                             # until cancelled by _main
            await asyncio.sleep(LOGIN_POLL)
            if not self.status.reauth_required:
                self._login.arm()
            elif self._login.changed():
                log.info("engine: new tokens in %s: signing in again", self._login.path)
                self._feed(SyncRequested())

    # ----------------------------------------------------------------- actions

    def _authenticate(self, refresh: bool) -> Event:
        assert self.session is not None
        result = authenticate(self.session, self.claim, refresh=refresh, note=self._set_error)
        if isinstance(result, AuthOk) and self.cause in (Cause.AUTH, Cause.SERVER_UNREACHABLE):
            self.cause = Cause.NONE             # signed in: that failure is over
        return result

    def _probe(self) -> Event:
        """Does the backend answer at all (any HTTP status)? Cheap, short timeout."""
        probe = getattr(self.remote, "probe", None)
        return ProbeResult(bool(probe()) if probe is not None else True)

    # -------------------------------------------------------------- realtime

    def _start_realtime(self) -> None:
        if self._realtime is not None or self._realtime_factory is None:
            return
        cfg = self.project.config
        assert cfg.supabase is not None
        # + records that left this system's scope (exits): not needed for "live"
        channels = realtime_channels(cfg.sync.realtime_transport, [
            (t.name, t.scope) for t in self.project.tables], cfg.system.id,
            extra=[(EXITS_TABLE, "scope")])
        token = self.session.access_token() if self.session is not None else None
        self._realtime = self._realtime_factory(cfg.supabase.url, cfg.supabase.anon_key, channels,
                                 on_change=self._on_remote_change,
                                 on_status=self._on_realtime_status, access_token=token)
        self._live.clear()
        self._realtime_task = asyncio.ensure_future(self._realtime.run())

    async def _stop_realtime(self) -> None:
        client, task = self._realtime, self._realtime_task
        self._realtime = self._realtime_task = None
        if client is not None:
            client.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - shutting down
                log.warning("engine: realtime did not stop cleanly: %r", exc)

    def _on_realtime_status(self, table: str, live: bool) -> None:
        tables = {t.name for t in self.project.tables}
        before = self._live >= tables
        if live and table in self._live:
            self._feed(Resubscribed())          # "Subscribed" again on a live channel
            return
        if not table:
            self._live.clear()
        elif live:
            self._live.add(table)
        else:
            self._live.discard(table)
        after = self._live >= tables
        if after and not before:
            self._feed(WsUp())
        elif before and not after:
            self._feed(WsDown())

    async def _on_remote_change(self, event: ChangeEvent) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._rt_io, self._apply_change, event)

    def _apply_change(self, event: ChangeEvent) -> None:
        self._hints.apply(event)

    def _catch_up_for(self, why: str, cause: Cause) -> None:
        """A Realtime change could not be applied here: a catch-up covers it (retried with
        backoff by the machine until it succeeds; the cursor moves only then)."""
        if cause is not Cause.NONE:
            self._set_error(why, cause)
        self._feed(SyncRequested())

    def _token_refreshed(self, token: Secret) -> None:
        client = self._realtime
        if client is not None:
            client.set_token(token)

    # ---------------------------------------------------------------- helpers

    def _notify(self, changes: Iterable[Change]) -> None:
        table = getattr(changes, "table", None)   # store.Applied: one table, built lazily
        if table is not None and not self._callbacks.get(table):
            return
        for ch in changes:
            for cb in self._callbacks.get(ch.table, ()):
                try:
                    cb(ch)
                except Exception:  # noqa: BLE001 - a callback must not stop the engine
                    log.exception("engine: callback for %s failed", ch.table)

    def _report(self, ins: ReportState) -> None:
        self.status = EngineStatus(ins.state, ins.reason, ins.offline, ins.reauth_required,
                                   ins.realtime, self.status.last_error)
        log.info("engine: %s%s", ins.state, f" ({ins.reason})" if ins.reason else "")
        for cb in self._state_callbacks:
            try:
                cb(self.status)
            except Exception:  # noqa: BLE001
                log.exception("engine: state callback failed")

    def _set_error(self, message: str, cause: Cause = Cause.NONE) -> None:
        """Note a failure (``cause`` for the indicator); ``""`` clears the last one."""
        if message:
            self._errors_noted += 1
        if not message or cause is not Cause.NONE:
            self.cause = cause
            self._cycle_cause = cause
        s = self.status
        self.status = EngineStatus(s.state, s.reason, s.offline, s.reauth_required,
                                   s.realtime, message[:500])
