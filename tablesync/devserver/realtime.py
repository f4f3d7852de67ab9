"""The devserver's Supabase-Realtime-compatible service (``/realtime/v1/websocket``).

:class:`RealtimeService` owns three PostgreSQL connections (LISTEN, dispatch, control), the
capture triggers on the tables of publication ``supabase_realtime``, and the live websocket
sessions. A change flows: row trigger -> NOTIFY (or stored row + NOTIFY of its id) -> listener
-> dispatcher (filters + RLS per subscriber, in SQL) -> each session's outbox -> websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Callable

import psycopg
from psycopg import sql
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from tablesync.devserver import realtime_auth as auth
from tablesync.devserver import realtime_capture as capture
from tablesync.devserver import realtime_protocol as proto
from tablesync.devserver.realtime_broadcast import DEFAULT_MAX_PAYLOAD_BYTES, Broadcasts
from tablesync.devserver.realtime_changes import (
    Change, access_error, build_data, filter_columns, omit_unchanged_toast, parse_change)
from tablesync.devserver.realtime_filters import (
    SubscriptionParamsError, SubscriptionSpec, evaluate, parse_params)
from tablesync.devserver.realtime_session import Binding, Channel, Session
from tablesync.devserver.errors import DevServerError, PayloadError
from tablesync.devserver.jwt import SigningKey

__all__ = ["RealtimeService"]

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 60.0  # Phoenix websocket timeout
DEFAULT_REFRESH_INTERVAL = 5.0  # publication re-check
STORED_CHANGE_TTL = 300.0  # seconds a large change stays in realtime.tablesync_changes
QUEUE_LIMIT = 100_000  # notifications waiting for the dispatcher
DISPATCH_STATEMENT_TIMEOUT_MS = 5000  # a slow RLS policy must not stall delivery forever
# postgres_changes messages a second per project. The bare service is unlimited (its protocol
# tests send bursts); the devserver passes Settings.realtime_rate_limit (hosted: 100).
DEFAULT_RATE_LIMIT = 0
_BACKOFF_CAP = 5.0


class RealtimeService:
    """Phoenix-channel Realtime over a real PostgreSQL; start(), mount the endpoint, stop()."""

    def __init__(self, *, dsn: str, jwt_secret: str, anon_key: str, service_key: str,
                 join_error_backoff: float = 0.0, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
                 clock: Callable[[], float] = time.time,
                 signing_key: SigningKey | None = None, api_keys: dict[str, str] | None = None,
                 toast_omission: bool = True, rate_limit: int = DEFAULT_RATE_LIMIT,
                 private_only: bool = False,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self._dsn = dsn
        self.clock = clock  # token expiry is measured on it (Unix seconds)
        self.jwt_secret = jwt_secret
        self.signing_key = signing_key
        self.anon_key = anon_key
        self.service_key = service_key
        self.api_keys = dict(api_keys or {})  # new-style key -> the legacy JWT of its role
        self.toast_omission = toast_omission
        self.rate_limit = rate_limit  # postgres_changes messages a second; 0 = unlimited
        self.private_only = private_only
        self.dropped = 0  # messages dropped by the rate limit
        self._rate_window = 0.0
        self._rate_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.join_error_backoff = join_error_backoff
        self.idle_timeout = idle_timeout
        self.refresh_interval = refresh_interval
        self._tables: dict[int, capture.TableInfo] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self._bindings: dict[int, list[Binding]] = {}
        self._selectable: dict[tuple[int, str], frozenset[str]] = {}
        self._sessions: set[Session] = set()
        self._session_done: set[asyncio.Event] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_LIMIT)
        self.broadcasts = Broadcasts(self._admit, max_payload_bytes)
        self._control: psycopg.AsyncConnection[Any] | None = None
        self._control_lock = asyncio.Lock()
        self._dispatch_conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = asyncio.Event()
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Install capture objects, find published tables, start listening."""
        try:
            await self._start()
        except psycopg.Error as exc:
            await self.stop()
            raise DevServerError(f"realtime could not prepare change capture: {exc}".strip(),
                                 hint="is PostgreSQL running and the DSN right?") from exc

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._control = await self._connect()
        await capture.install(self._control)
        async with self._control_lock:
            await self._refresh_locked()
            await capture.prune(self._control, STORED_CHANGE_TTL)
            await capture.prune_messages(self._control, STORED_CHANGE_TTL)
        self._dispatch_conn = await self._connect(DISPATCH_STATEMENT_TIMEOUT_MS)
        self._running = True
        self._tasks = [asyncio.create_task(self._listen_loop(), name="realtime-listen"),
                       asyncio.create_task(self._dispatch_loop(), name="realtime-dispatch"),
                       asyncio.create_task(self._refresh_loop(), name="realtime-refresh")]
        try:
            await asyncio.wait_for(self._listening.wait(), timeout=10)
        except asyncio.TimeoutError as exc:
            await self.stop()
            raise DevServerError("realtime could not LISTEN on PostgreSQL within 10 s") from exc

    async def stop(self) -> None:
        """Close every socket (1001), stop the background tasks, close connections."""
        self._running = False
        for session in list(self._sessions):
            session.close()
        waits = [asyncio.create_task(ev.wait()) for ev in self._session_done]
        if waits:
            await asyncio.wait(waits, timeout=5)
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for conn in (self._dispatch_conn, self._control):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._dispatch_conn = self._control = None
        self._listening.clear()

    async def _connect(self, statement_timeout_ms: int = 0) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        if statement_timeout_ms:
            await conn.execute("SELECT set_config('statement_timeout', %s, false)",
                               (str(statement_timeout_ms),))
        return conn

    # -- hosted behaviours --------------------------------------------------------------
    def _admit(self) -> bool:
        """One message against the per-second project budget (fixed one-second windows)."""
        if self.rate_limit <= 0:
            return True
        now = asyncio.get_running_loop().time()
        if now - self._rate_window >= 1.0:
            self._rate_window, self._rate_count = now, 0
        if self._rate_count >= self.rate_limit:
            if self.dropped == 0 or self._rate_count == self.rate_limit:
                log.info("realtime: over %d messages a second; dropping", self.rate_limit)
            self._rate_count += 1
            self.dropped += 1
            return False
        self._rate_count += 1
        return True

    async def restart_capture(self) -> None:
        """Restart change capture, as when Realtime's replication process restarts: a new
        LISTEN connection, then every joined channel with postgres_changes subscribes again
        and receives a second "Subscribed to PostgreSQL" (channels stay open). Changes
        committed while the listener was down are lost, as with a restarted replication."""
        if not self._running:
            raise DevServerError("realtime is not running")
        for task in self._tasks:
            if task.get_name() == "realtime-listen":
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._listening.clear()
        listen = asyncio.create_task(self._listen_loop(), name="realtime-listen")
        self._tasks = [t for t in self._tasks if t.get_name() != "realtime-listen"] + [listen]
        await asyncio.wait_for(self._listening.wait(), timeout=10)
        for session in list(self._sessions):
            session.resubscribe()

    def restart_capture_threadsafe(self, timeout: float = 15.0) -> None:
        """:meth:`restart_capture` from another thread (the DevServer's)."""
        if self._loop is None:
            raise DevServerError("realtime is not running")
        asyncio.run_coroutine_threadsafe(self.restart_capture(), self._loop).result(timeout)

    # -- websocket ----------------------------------------------------------------------
    async def websocket_endpoint(self, websocket: WebSocket) -> None:
        """Serve one Phoenix socket (query: apikey, vsn, log_level; header x-api-key)."""
        params = websocket.query_params
        token = websocket.headers.get("x-api-key") or params.get("apikey")
        try:
            vsn = proto.parse_vsn(params.get("vsn"))
        except proto.FrameError as exc:
            await _deny(websocket, 400, str(exc))
            return
        if token is None:
            await _deny(websocket, 401, "API key is missing")
            return
        token = self.api_keys.get(token, token)
        try:
            auth.verify(token, self.jwt_secret, now=self.clock(), key=self.signing_key)
        except auth.TokenRefused as exc:
            await _deny(websocket, exc.handshake_status, exc.handshake_message)
            return
        if not self._running:
            await _deny(websocket, 500, "Error connecting to Realtime")
            return
        await websocket.accept()
        session = Session(self, websocket, vsn, token, idle_timeout=self.idle_timeout)
        done = asyncio.Event()
        self._sessions.add(session)
        self._session_done.add(done)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self._session_done.discard(done)
            done.set()

    # -- subscriptions (called by sessions) ---------------------------------------------
    async def subscribe(self, channel: Channel) -> str | None:
        """Validate and register a channel's postgres_changes; the error text or None."""
        specs: list[tuple[int, SubscriptionSpec]] = []
        for sub_id, params in channel.entries:
            try:
                specs.append((sub_id, parse_params(params)))
            except SubscriptionParamsError as exc:
                return str(exc)
        try:
            async with self._control_lock:
                await self._refresh_tables_locked()  # new tables, replica identity, triggers
                bindings: list[Binding] = []
                for sub_id, spec in specs:
                    error = await self._bind(channel, sub_id, spec, bindings)
                    if error is not None:
                        return error
                if channel.closed:
                    return None
                self.unsubscribe(channel)
                channel.bindings = bindings
                for binding in bindings:
                    self._bindings.setdefault(binding.oid, []).append(binding)
                # capture on before "Subscribed to PostgreSQL" is sent: later writes are seen
                assert self._control is not None
                await capture.set_subscribed(self._control, self._subscribed_oids())
        except psycopg.Error as exc:
            log.warning("realtime: subscribing failed: %s", exc)
            if self._control is None or self._control.broken or self._control.closed:
                await self._reconnect_control()
            return f"Unable to subscribe to changes: {capture.describe_error(exc)}"
        return None

    async def _bind(self, channel: Channel, sub_id: int, spec: SubscriptionSpec,
                    out: list[Binding]) -> str | None:
        oids = self._match(spec)
        if not oids:
            return ("Unable to subscribe to changes with given parameters. Please check Realtime"
                    f" is enabled for the given connect parameters: [{spec.describe()}]")
        assert self._control is not None
        filters = [f.as_json() for f in spec.filters]
        for oid in oids:
            try:
                await capture.check_subscription(self._control, oid, channel.claims, filters)
                await self._cache_selectable(self._control, oid, channel.role)
            except psycopg.Error as exc:
                return ("Unable to subscribe to changes with given parameters. An exception "
                        "happened so please check your connect parameters: "
                        f"[{spec.describe()}]. Exception: {capture.describe_error(exc)}")
            out.append(Binding(channel, sub_id, spec, oid))
        return None

    def _subscribed_oids(self) -> set[int]:
        return {oid for oid, live in self._bindings.items()
                if any(not b.channel.closed for b in live)}

    async def authorize(self, channel: Channel, presence: bool) -> str | None:
        """Realtime Authorization of a private join: None, or the join error's reason."""
        extensions = ("broadcast", "presence") if presence else ("broadcast",)
        try:
            async with self._control_lock:
                if self._control is None or self._control.closed:
                    raise psycopg.OperationalError("no control connection")
                allowed = await capture.read_authorizations(
                    self._control, channel.sub_topic, channel.claims, extensions)
        except psycopg.Error as exc:  # Supabase: RlsPolicyError, then refused
            log.warning("realtime: RlsPolicyError for topic %r: %s", channel.sub_topic, exc)
            if self._control is None or self._control.broken or self._control.closed:
                await self._reconnect_control()
            allowed = {}
        channel.broadcast_read = allowed.get("broadcast", False)
        if any(allowed.values()):
            return None
        return ("Unauthorized: You do not have permissions to read from this Channel topic: "
                f"{channel.sub_topic}")

    def listen(self, channel: Channel) -> None:
        """Route the broadcasts of the channel's topic to it."""
        self.broadcasts.add(channel)

    def unsubscribe(self, channel: Channel) -> None:
        """Forget a channel's bindings (and its broadcast route once it is closed)."""
        if channel.closed:
            self.broadcasts.remove(channel)
        for binding in channel.bindings:
            live = self._bindings.get(binding.oid)
            if live and binding in live:
                live.remove(binding)
        channel.bindings = []

    def _match(self, spec: SubscriptionSpec) -> list[int]:
        return sorted(oid for oid, info in self._tables.items()
                      if spec.schema in ("*", info.schema) and spec.table in ("*", info.name))

    async def _cache_selectable(self, conn: psycopg.AsyncConnection[Any], oid: int,
                                role: str) -> frozenset[str]:
        cols = await capture.selectable_columns(conn, oid, role)
        self._selectable[(oid, role)] = cols
        return cols

    # -- publication refresh ------------------------------------------------------------
    async def _refresh_tables_locked(self) -> None:
        """Re-read the publication and install/remove capture triggers."""
        assert self._control is not None
        tables = await capture.published_tables(self._control)
        await capture.sync_triggers(self._control, tables)
        self._tables = tables
        self._by_name = {(t.schema, t.name): oid for oid, t in tables.items()}

    async def _refresh_locked(self) -> None:
        """Tables and triggers, captured tables, the cached column privileges per role."""
        await self._refresh_tables_locked()
        assert self._control is not None
        await capture.set_subscribed(self._control, self._subscribed_oids())
        for oid, role in list(self._selectable):
            if oid in self._tables:
                await self._cache_selectable(self._control, oid, role)
            else:
                del self._selectable[(oid, role)]

    async def _refresh_loop(self) -> None:
        delay = self.refresh_interval
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._control_lock:
                    await self._refresh_locked()
                    assert self._control is not None
                    await capture.prune(self._control, STORED_CHANGE_TTL)
                    await capture.prune_messages(self._control, STORED_CHANGE_TTL)
                delay = self.refresh_interval
            except psycopg.Error as exc:
                log.warning("realtime: publication refresh failed: %s", exc)
                delay = min(delay * 2, 60.0)
                await self._reconnect_control()

    async def _reconnect_control(self) -> None:
        async with self._control_lock:
            if self._control is not None:
                with contextlib.suppress(Exception):
                    await self._control.close()
            with contextlib.suppress(psycopg.Error):
                self._control = await self._connect()

    # -- capture -> delivery ------------------------------------------------------------
    async def _listen_loop(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await self._connect()
            except psycopg.Error as exc:
                log.warning("realtime: cannot connect for LISTEN: %s", exc)
            else:
                try:
                    for name in (capture.CHANNEL, capture.BROADCAST_CHANNEL):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                    self._listening.set()
                    delay = 0.1
                    async for note in conn.notifies():
                        await self._queue.put((note.channel, note.payload))
                except psycopg.Error as exc:
                    log.warning("realtime: LISTEN connection lost: %s", exc)
                finally:
                    self._listening.clear()
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _dispatch_loop(self) -> None:
        while True:
            channel, payload = await self._queue.get()
            try:
                if channel == capture.BROADCAST_CHANNEL:
                    await self._dispatch_broadcast(payload)
                else:
                    await self._dispatch(payload)
            except psycopg.Error as exc:
                log.warning("realtime: dropping a change, database error: %s", exc)
                await self._reconnect_dispatch()
            except PayloadError as exc:
                log.warning("realtime: dropping a change: %s", exc)
            except Exception:  # a bug must not stop delivery for everyone: log, keep going
                log.exception("realtime: dispatching a change failed; change dropped")

    async def _reconnect_dispatch(self) -> None:
        if self._dispatch_conn is not None:
            with contextlib.suppress(Exception):
                await self._dispatch_conn.close()
        self._dispatch_conn = None
        with contextlib.suppress(psycopg.Error):
            self._dispatch_conn = await self._connect(DISPATCH_STATEMENT_TIMEOUT_MS)

    async def _dispatch_broadcast(self, payload: str) -> None:
        conn = self._dispatch_conn
        if conn is None:
            await self._reconnect_dispatch()
            conn = self._dispatch_conn
            if conn is None:
                return
        await self.broadcasts.dispatch(conn, payload)

    async def _dispatch(self, payload: str) -> None:
        conn = self._dispatch_conn
        if conn is None:
            await self._reconnect_dispatch()
            conn = self._dispatch_conn
            if conn is None:
                return
        if not payload.startswith("{"):
            if not payload.isdigit():
                raise PayloadError(
                    f"unexpected notification on {capture.CHANNEL}: {payload[:40]!r}")
            text = await capture.stored_change(conn, int(payload))
            if text is None:
                log.warning("realtime: stored change %s is gone; dropped", payload)
                return
            payload = text
        change = parse_change(payload)
        if self.toast_omission:
            change = omit_unchanged_toast(change)
        oid = self._by_name.get((change.schema, change.table))
        info = self._tables.get(oid) if oid is not None else None
        if oid is None or info is None:
            return
        bindings = [b for b in self._bindings.get(oid, ())
                    if b.spec.wants(change.type) and not b.channel.closed]
        if not bindings:
            return
        visible = await self._visible(conn, change, info, bindings)
        self._deliver(change, info, visible)

    async def _selectable_for(self, conn: psycopg.AsyncConnection[Any], oid: int,
                              role: str) -> frozenset[str]:
        cols = self._selectable.get((oid, role))
        return cols if cols is not None else await self._cache_selectable(conn, oid, role)

    async def _visible(self, conn: psycopg.AsyncConnection[Any], change: Change,
                       info: capture.TableInfo, bindings: list[Binding]) -> list[Binding]:
        """The bindings that receive this change (filters + RLS, as apply_rls decides)."""
        check_rls = info.rls and change.type != "DELETE"
        rec = filter_columns(change, info)
        types = dict(info.columns)
        keys: dict[str, int] = {}
        subs: list[dict[str, Any]] = []
        pending: list[tuple[Binding, int | None]] = []
        for b in bindings:
            cols = await self._selectable_for(conn, info.oid, b.channel.role)
            if access_error(change, info, cols) is not None:
                pending.append((b, None))  # Supabase sends its 400/401 error unfiltered
                continue
            undecided = _undecided_filters(b.spec, rec, types)
            if undecided is None:
                continue  # a filter already said no
            if not (check_rls or undecided):
                pending.append((b, None))
                continue
            sub = {"claims": b.channel.claims, "filters": undecided}
            key = json.dumps(sub, sort_keys=True)
            if key not in keys:
                keys[key] = len(subs)
                subs.append(sub)
            pending.append((b, keys[key]))
        stmt = capture.rls_statement(info) if check_rls else None
        results = (await capture.visible(conn, info.oid, rec, stmt, subs)) if subs else []
        return [b for b, idx in pending if idx is None or (idx < len(results) and results[idx])]

    def _deliver(self, change: Change, info: capture.TableInfo, bindings: list[Binding]) -> None:
        by_channel: dict[int, tuple[Channel, list[int]]] = {}
        for b in bindings:
            entry = by_channel.setdefault(id(b.channel), (b.channel, []))
            if b.sub_id not in entry[1]:
                entry[1].append(b.sub_id)
        data_by_role: dict[str, dict[str, Any]] = {}
        for channel, ids in by_channel.values():
            role = channel.role
            if role not in data_by_role:
                cols = self._selectable.get((info.oid, role), frozenset())
                data_by_role[role] = build_data(change, info, cols)
            data = data_by_role[role]
            if not self._admit():
                continue  # over the project's rate limit: dropped, the client is not told
            if channel.new_api:
                frame = proto.Frame(None, None, channel.topic, "postgres_changes",
                                    {"ids": ids, "data": data})
            else:
                frame = proto.Frame(None, None, channel.topic, change.type, data)
            channel.push(frame)


def _undecided_filters(spec: SubscriptionSpec, rec: dict[str, Any],
                       types: dict[str, str]) -> list[list[Any]] | None:
    """Filters PostgreSQL must still evaluate; None when one is already known to fail."""
    undecided: list[list[Any]] = []
    for flt in spec.filters:
        if flt.column not in rec:
            return None  # fail closed, like is_visible_through_filters
        verdict = evaluate(flt, types.get(flt.column, ""), rec[flt.column])
        if verdict is False:
            return None
        if verdict is None:
            undecided.append(flt.as_json())
    return undecided


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with a plain HTTP response, as Realtime does."""
    try:
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
    except RuntimeError:  # server without the websocket denial extension
        await websocket.close(code=1008, reason=message[:120])


