"""Supabase Realtime client (Phoenix channels); the only websockets user.

Two transports (docs/realtime.md). Broadcast from Database (:class:`SystemChannel`): one
private channel ``realtime:tablesync:<system id>`` for all tables, live once its join reply
is ``ok`` (the server routes the topic's messages to it before replying), each message a
``{schema, table, operation, record, old_record}`` payload. ``postgres_changes``
(:class:`TableChannel`): one channel per synced table (``realtime:<table>``, event ``*``,
schema ``public``, filter ``<scope>=eq.<system id>``), live only after its join reply is
``ok`` *and* the server's system message "Subscribed to PostgreSQL" arrived. Changes
committed before a channel is live are never delivered, so the engine runs its REST
catch-up when it hears ``on_status(table, True)``. Frames are vsn 2.0.0 arrays by default; vsn 1.0.0
objects are spoken too. Heartbeats every ``heartbeat`` seconds; a missing heartbeat reply
closes the socket. Reconnects and rejoins use :class:`~tablesync.backoff.Backoff`.
Refreshed tokens are pushed to every joined channel (``access_token`` message) and used by
later joins. Malformed frames are counted and dropped; nothing the server sends can crash
the client. :meth:`RealtimeClient.stop` is thread-safe and ends :meth:`run` cleanly.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from tablesync.backoff import Backoff
from tablesync.remote.base import (ChangeEvent, OnChange, OnStatus, RealtimeChannel,
                                   SystemChannel)
from tablesync.vault import Secret

VSN_1, VSN_2 = "1.0.0", "2.0.0"
DEFAULT_HEARTBEAT = 25.0
DEFAULT_JOIN_TIMEOUT = 10.0
DEFAULT_MAX_FRAME = 5_000_000
DEFAULT_REJOIN_DELAYS = (1.0, 2.0, 5.0, 10.0)   # as Phoenix' rejoinAfterMs
SUBSCRIBED = "Subscribed to PostgreSQL"
USER_BROADCAST = 4  # kind byte of Realtime's binary user-broadcast frame (vsn 2.0.0)

log = logging.getLogger("tablesync.realtime")
# websockets logs request lines (the URL carries the apikey) at DEBUG: keep it quiet.
_ws_log = logging.getLogger("tablesync.realtime.ws")
_ws_log.setLevel(logging.INFO)

__all__ = ["RealtimeClient", "websocket_url"]


def websocket_url(url: str, apikey: str, vsn: str = VSN_2) -> str:
    """``<url>/realtime/v1/websocket?apikey=...&vsn=...`` with http(s) -> ws(s)."""
    base = url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return f"{base}/realtime/v1/websocket?" + urlencode({"apikey": apikey, "vsn": vsn})


@dataclass
class _Channel:
    spec: RealtimeChannel
    join_ref: str | None = None
    joined: bool = False
    live: bool = False
    rejoin_tries: int = 0


@dataclass
class Stats:
    """Counters for tests and status."""

    connects: int = 0
    joins: int = 0
    changes: int = 0
    malformed: int = 0
    heartbeats: int = 0
    token_pushes: int = 0
    errors: list[str] = field(default_factory=list)


class _Reconnect(Exception):
    """End this socket session and reconnect."""


class RealtimeClient:
    """Live ``postgres_changes`` for ``channels``.

    Args:
        url: project URL (http/https; the websocket URL is derived).
        anon_key: the project's anon key (``apikey`` query parameter).
        channels: one :class:`SystemChannel` (broadcast), or one TableChannel per table.
        on_change: called with every :class:`ChangeEvent` (sync or async).
        on_status: ``(table, live)`` when a table's subscription goes live or drops;
            table ``""`` with ``False`` when the whole socket dropped; ``(table, True)``
            again when a live subscription is confirmed a second time (the server's change
            capture restarted: changes may have been lost meanwhile).
        access_token: the user's JWT for joins (None: the anon key's role).
        vsn: ``2.0.0`` (arrays) or ``1.0.0`` (objects).
        heartbeat: seconds between heartbeats (Supabase needs <= 25 s).
        join_timeout: seconds to wait for a join reply before rejoining.
        backoff: reconnect/rejoin delays (default 1, 2, 4, 8 s, then every 30 s).
        max_frame: largest accepted frame in bytes.
        rejoin_delays: seconds before the 1st, 2nd, ... rejoin of a refused/closed channel.
    """

    def __init__(self, url: str, anon_key: str | Secret, channels: Sequence[RealtimeChannel], *,
                 on_change: OnChange, on_status: OnStatus | None = None,
                 access_token: Secret | None = None, vsn: str = VSN_2,
                 heartbeat: float = DEFAULT_HEARTBEAT,
                 join_timeout: float = DEFAULT_JOIN_TIMEOUT, backoff: Backoff | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME,
                 rejoin_delays: Sequence[float] = DEFAULT_REJOIN_DELAYS) -> None:
        if vsn not in (VSN_1, VSN_2):
            raise ValueError(f"unsupported Phoenix serializer vsn {vsn!r}")
        self.url = url
        self._anon = anon_key if isinstance(anon_key, Secret) else Secret(anon_key)
        self.channels = {c.topic: _Channel(c) for c in channels}
        self.on_change, self.on_status = on_change, on_status
        self._token = access_token
        self.vsn, self.heartbeat, self.join_timeout = vsn, heartbeat, join_timeout
        self.backoff = backoff or Backoff(max_retries=5, offline_interval=30.0)
        self.max_frame = max_frame
        self.rejoin_delays = tuple(rejoin_delays)
        self.stats = Stats()
        self._refs = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._ws: ClientConnection | None = None
        self._pending_heartbeat: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"RealtimeClient({self.url!r}, tables={[c.spec.table for c in self.channels.values()]})"

    # ------------------------------------------------------------------ public API

    @property
    def live_tables(self) -> frozenset[str]:
        return frozenset(t for c in self.channels.values() if c.live for t in c.spec.tables)

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe, idempotent)."""
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass

    def set_token(self, token: Secret) -> None:
        """Use ``token`` from now on and push it to every joined channel (thread-safe)."""
        self._token = token
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._spawn, self._push_token())
            except RuntimeError:
                pass

    async def run(self) -> None:
        """Connect, join and deliver until :meth:`stop`; reconnect with backoff."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            return
        while not self._stop.is_set():
            retry_after = await self._one_connection()
            if self._stop.is_set():
                break
            delay = self.backoff.next_delay(retry_after)
            log.info("realtime: reconnecting in %.1f s", delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    # -------------------------------------------------------------- one connection

    async def _one_connection(self) -> float | None:
        uri = websocket_url(self.url, self._anon.reveal(), self.vsn)
        try:
            async with connect(uri, max_size=self.max_frame, open_timeout=10,
                               close_timeout=2, ping_interval=None, logger=_ws_log,
                               user_agent_header="tablesync") as ws:
                self._ws = ws
                self.stats.connects += 1
                await self._session(ws)
        except InvalidStatus as exc:
            status = exc.response.status_code
            self._error(f"websocket handshake refused: HTTP {status}")
            return 10.0 if status == 429 else None
        except (OSError, WebSocketException, asyncio.TimeoutError, _Reconnect) as exc:
            if not (self._stop and self._stop.is_set()):
                self._error(f"websocket: {type(exc).__name__}: {str(exc)[:120]}")
        finally:
            self._ws = None
            await self._end_session()
        return None

    async def _session(self, ws: ClientConnection) -> None:
        self._pending_heartbeat = None
        assert self._stop is not None
        for ch in self.channels.values():
            await self._join(ch)
        reader = asyncio.create_task(self._reader(ws))
        beat = asyncio.create_task(self._heartbeats())
        stopper = asyncio.create_task(self._stop.wait())
        done, pending = await asyncio.wait({reader, beat, stopper},
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if stopper in done:
            await self._leave_all()
            return
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    async def _end_session(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        was_live = any(c.live for c in self.channels.values())
        for ch in self.channels.values():
            ch.joined = ch.live = False
            ch.join_ref = None
        if was_live:
            await self._status("", False)

    # ------------------------------------------------------------------ channels

    async def _join(self, ch: _Channel) -> None:
        ref = self._ref()
        ch.join_ref, ch.joined, ch.live = ref, False, False
        spec = ch.spec
        private = isinstance(spec, SystemChannel)
        if isinstance(spec, SystemChannel):
            changes = [{"event": "*", "schema": "public", "table": table,
                        "filter": spec.filter(scope)} for table, scope in spec.changes]
        else:
            changes = [{"event": "*", "schema": "public", "table": spec.table,
                        "filter": spec.filter}]
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"enabled": False, "key": ""},
                "postgres_changes": changes,
                "private": private,
            },
        }
        if self._token:
            payload["access_token"] = self._token.reveal()
        self.stats.joins += 1
        await self._send(ref, ref, ch.spec.topic, "phx_join", payload)
        self._spawn(self._join_deadline(ch, ref))

    async def _join_deadline(self, ch: _Channel, ref: str) -> None:
        await asyncio.sleep(self.join_timeout)
        if ch.join_ref == ref and not ch.live:
            self._error(f"realtime {ch.spec.table}: no subscription after "
                        f"{self.join_timeout:.0f} s, rejoining")
            await self._send(ref, self._ref(), ch.spec.topic, "phx_leave", {})
            await self._join(ch)

    async def _rejoin_later(self, ch: _Channel) -> None:
        ch.rejoin_tries += 1
        delay = self.rejoin_delays[min(ch.rejoin_tries, len(self.rejoin_delays)) - 1]
        ch.join_ref = None
        await asyncio.sleep(delay)
        if ch.join_ref is None and self._ws is not None:
            await self._join(ch)

    async def _leave_all(self) -> None:
        for ch in self.channels.values():
            if ch.join_ref is not None:
                try:
                    await self._send(ch.join_ref, self._ref(), ch.spec.topic, "phx_leave", {})
                except (OSError, WebSocketException):
                    return

    async def _push_token(self) -> None:
        if not self._token or self._ws is None:
            return
        for ch in self.channels.values():
            if ch.joined and ch.join_ref is not None:
                self.stats.token_pushes += 1
                await self._send(ch.join_ref, self._ref(), ch.spec.topic, "access_token",
                                 {"access_token": self._token.reveal()})

    # -------------------------------------------------------------------- frames

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if self._pending_heartbeat is not None:
                raise _Reconnect("heartbeat timeout")
            ref = self._ref()
            self._pending_heartbeat = ref
            self.stats.heartbeats += 1
            await self._send(None, ref, "phoenix", "heartbeat", {})

    async def _reader(self, ws: ClientConnection) -> None:
        async for frame in ws:
            msg = self._decode_binary(frame) if isinstance(frame, bytes) else self._decode(frame)
            if msg is None:
                self.stats.malformed += 1
                continue
            try:
                await self._dispatch(*msg)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.stats.malformed += 1
                self._error(f"realtime: dropped a malformed message: {exc!s:.120}")

    def _decode_binary(self, frame: bytes
                       ) -> tuple[str | None, str | None, str, str, Any] | None:
        """Realtime's binary user broadcast ``<<4, topic_size, event_size, meta_size,
        encoding, topic, event, meta, payload>>`` as a vsn 1 ``broadcast`` message."""
        if len(frame) < 5 or frame[0] != USER_BROADCAST or frame[4] != 1:
            return None                         # other binary kinds, or a non-JSON payload
        at, parts = 5, []
        for size in frame[1:4]:
            parts.append(frame[at:at + size])
            at += size
        try:
            topic, event = parts[0].decode(), parts[1].decode()
            payload = json.loads(frame[at:])
        except (ValueError, RecursionError):
            return None
        return None, None, topic, "broadcast", {"event": event, "payload": payload,
                                                "type": "broadcast"}

    def _decode(self, frame: str) -> tuple[str | None, str | None, str, str, Any] | None:
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):      # deeply nested arrays overflow the parser
            return None
        if isinstance(data, list) and len(data) == 5:
            join_ref, ref, topic, event, payload = data
        elif isinstance(data, dict):
            join_ref, ref = data.get("join_ref"), data.get("ref")
            topic, event, payload = data.get("topic"), data.get("event"), data.get("payload")
        else:
            return None
        if not isinstance(topic, str) or not isinstance(event, str):
            return None
        return (None if join_ref is None else str(join_ref),
                None if ref is None else str(ref), topic, event, payload)

    async def _dispatch(self, join_ref: str | None, ref: str | None, topic: str, event: str,
                        payload: Any) -> None:
        if topic == "phoenix":
            if event == "phx_reply" and ref is not None and ref == self._pending_heartbeat:
                self._pending_heartbeat = None
            return
        ch = self.channels.get(topic)
        if ch is None or ch.join_ref is None:
            return                              # unknown topic, or a rejoin is pending
        if event in ("phx_close", "phx_error") and join_ref is None:
            join_ref = ref                      # vsn 1.0.0 sends the join ref as ref
        if join_ref is not None and join_ref != ch.join_ref:
            return                              # a message for an older join
        if event == "phx_reply":
            await self._on_reply(ch, ref, payload)
        elif event == "system":
            await self._on_system(ch, payload)
        elif event == "postgres_changes":
            await self._on_change(ch, payload)
        elif event == "broadcast":
            await self._on_broadcast(ch, payload)
        elif event in ("phx_close", "phx_error"):
            await self._on_closed(ch, event, ref)

    async def _on_reply(self, ch: _Channel, ref: str | None, payload: Any) -> None:
        if ref is None or ref != ch.join_ref:
            return
        status = payload.get("status")
        if status == "ok":
            ch.joined = True
            if isinstance(ch.spec, SystemChannel) and not ch.spec.changes:
                # broadcast: the server routes the topic to the channel before replying
                ch.live, ch.rejoin_tries = True, 0
                self.backoff.reset()
                for table in ch.spec.tables:
                    await self._status(table, True)
            return
        reason = str((payload.get("response") or {}).get("reason", payload))
        self._error(f"realtime {ch.spec.table}: join refused: {reason[:200]}")
        self._spawn(self._rejoin_later(ch))

    async def _on_system(self, ch: _Channel, payload: Any) -> None:
        status, message = payload.get("status"), str(payload.get("message", ""))
        ext = payload.get("extension")
        if ext == "postgres_changes" and status == "ok" and SUBSCRIBED in message:
            if not ch.live:
                ch.live, ch.rejoin_tries = True, 0
                self.backoff.reset()
            # reported again when already live: the server's change capture restarted
            # (changes in between may be lost), so the engine catches up
            for table in ch.spec.tables:
                await self._status(table, True)
            return
        if status == "error":
            self._error(f"realtime {ch.spec.table}: {ext}: {message[:200]}")
            if ext == "postgres_changes":      # channel stays open but delivers nothing
                await self._set_down(ch)
                await self._send(ch.join_ref, self._ref(), ch.spec.topic, "phx_leave", {})
                self._spawn(self._rejoin_later(ch))

    async def _on_change(self, ch: _Channel, payload: Any) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            data = payload                      # legacy API shape
        kind = str(data.get("type", "")).upper()
        table = data.get("table")
        if kind not in ("INSERT", "UPDATE", "DELETE") or table not in ch.spec.tables:
            self.stats.malformed += 1
            return
        record, old = data.get("record") or {}, data.get("old_record") or {}
        errors = data.get("errors") or ()
        if not isinstance(record, dict) or not isinstance(old, dict):
            self.stats.malformed += 1
            return
        event = ChangeEvent(table, kind, record, old, str(data.get("commit_timestamp", "")),
                            tuple(str(e) for e in errors) if isinstance(errors, list) else ())
        self.stats.changes += 1
        result = self.on_change(event)
        if inspect.isawaitable(result):
            await result

    async def _on_broadcast(self, ch: _Channel, payload: Any) -> None:
        """A Broadcast-from-Database message: the row image of one change."""
        body = payload.get("payload") if isinstance(payload, dict) else None
        if not isinstance(body, dict) or not isinstance(ch.spec, SystemChannel):
            self.stats.malformed += 1
            return
        kind, table = str(body.get("operation", "")).upper(), body.get("table")
        record, old = body.get("record") or {}, body.get("old_record") or {}
        if (kind not in ("INSERT", "UPDATE", "DELETE") or table not in ch.spec.tables
                or not isinstance(record, dict) or not isinstance(old, dict)):
            self.stats.malformed += 1
            return
        self.stats.changes += 1
        result = self.on_change(ChangeEvent(str(table), kind, record, old))
        if inspect.isawaitable(result):
            await result

    async def _on_closed(self, ch: _Channel, event: str, ref: str | None) -> None:
        await self._set_down(ch)
        self._error(f"realtime {ch.spec.table}: channel {event}, rejoining")
        self._spawn(self._rejoin_later(ch))

    async def _set_down(self, ch: _Channel) -> None:
        was_live = ch.live
        ch.joined = ch.live = False
        if was_live:
            for table in ch.spec.tables:
                await self._status(table, False)

    # ------------------------------------------------------------------- helpers

    def _ref(self) -> str:
        return str(next(self._refs))

    async def _send(self, join_ref: str | None, ref: str, topic: str, event: str,
                    payload: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        if self.vsn == VSN_2:
            text = json.dumps([join_ref, ref, topic, event, payload])
        else:
            msg = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                msg["join_ref"] = join_ref
            text = json.dumps(msg)
        await ws.send(text)

    async def _status(self, table: str, live: bool) -> None:
        if self.on_status is None:
            return
        result = self.on_status(table, live)
        if inspect.isawaitable(result):
            await result

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (OSError, WebSocketException)):
                self._error(f"realtime: background task failed: {exc!r:.160}")

    def _error(self, message: str) -> None:
        self.stats.errors.append(message)
        del self.stats.errors[:-50]
        log.warning("%s", message)


def callback_in_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a blocking callback so it runs in the default executor (keeps the loop free)."""

    async def wrapper(*args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    return wrapper
