"""One Realtime websocket: Phoenix socket + ``realtime:*`` channels, as Supabase runs them.

The session reads frames, answers heartbeats, joins/leaves channels, renews and enforces
channel tokens, and writes everything it is given through one bounded outbox. Change capture
and delivery live in :mod:`tablesync.devserver.realtime` (the hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from tablesync.devserver import realtime_auth as auth
from tablesync.devserver import realtime_protocol as proto
from tablesync.devserver.jwt import SigningKey
from tablesync.devserver.realtime_filters import SubscriptionSpec

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 10_000  # frames queued for one slow client before it is disconnected
MAX_CHANNELS = 100  # Supabase's max_channels_per_client default
CONFIRM_TOKEN_S = 300.0  # Supabase re-checks a channel's token every 5 minutes (or at exp)
CLOSE_GRACE_S = 5.0  # how long a closing socket may take to flush what is queued
CLOCK_POLL_S = 1.0  # a waiting token check re-reads the hub's clock this often (tests move it)


class Hub(Protocol):
    """What a session needs from the service."""

    jwt_secret: str
    signing_key: SigningKey | None
    join_error_backoff: float
    clock: Callable[[], float]
    private_only: bool

    async def subscribe(self, channel: Channel) -> str | None: ...

    async def authorize(self, channel: Channel, presence: bool) -> str | None: ...

    def listen(self, channel: Channel) -> None: ...

    def unsubscribe(self, channel: Channel) -> None: ...


@dataclass(eq=False)
class Binding:
    """One live ``postgres_changes`` entry of a channel, resolved to one table."""

    channel: Channel
    sub_id: int
    spec: SubscriptionSpec
    oid: int


@dataclass(eq=False)
class Channel:
    """A joined ``realtime:*`` topic."""

    session: Session
    topic: str
    join_ref: str | None
    access_token: str
    claims: dict[str, Any]
    new_api: bool
    entries: list[tuple[int, Any]]  # (subscription id, the params the client sent)
    bindings: list[Binding] = field(default_factory=list)
    closed: bool = False
    private: bool = False
    broadcast_read: bool | None = None  # private channels: may it receive broadcasts?
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def sub_topic(self) -> str:
        return self.topic[len(proto.TOPIC_PREFIX):]

    @property
    def role(self) -> str:
        return str(self.claims.get("role", "anon"))

    def push(self, frame: proto.Frame) -> None:
        if not self.closed:
            self.session.push(frame)

    def system(self, extension: str, status: str, message: str) -> None:
        self.push(proto.system(self.topic, self.join_ref, extension, status, message))


def _private(payload: dict[str, Any]) -> bool:
    """Whether a join asks for a private channel (``config.private`` true)."""
    config = payload.get("config")
    return isinstance(config, dict) and config.get("private") is True


def _presence(payload: dict[str, Any]) -> bool:
    """Whether a join enables presence (``config.presence.enabled``; on unless false)."""
    config = payload.get("config")
    presence = config.get("presence") if isinstance(config, dict) else None
    return not (isinstance(presence, dict) and presence.get("enabled") is False)


def _entries(payload: dict[str, Any], sub_topic: str) -> tuple[bool, list[tuple[int, Any]]]:
    """(new API?, [(id, params)]) from a join payload (legacy API: topic-derived params)."""
    if "config" in payload:
        config = payload.get("config")
        raw = config.get("postgres_changes") if isinstance(config, dict) else None
        items = [p for p in raw if p is not None] if isinstance(raw, list) else []
        return True, [(proto.subscription_id(p), p) for p in items]
    parts = sub_topic.split(":", 2)
    params = dict(zip(("schema", "table", "filter"), parts))
    return False, [(proto.subscription_id(params), params)]


class Session:
    """Serves one websocket until it closes or the service stops."""

    def __init__(self, hub: Hub, websocket: WebSocket, vsn: str, token: str,
                 *, idle_timeout: float) -> None:
        self.hub = hub
        self.websocket = websocket
        self.vsn = vsn
        self.token = token
        self.idle_timeout = idle_timeout
        self.channels: dict[str, Channel] = {}
        self._outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(OUTBOX_LIMIT)
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- output -------------------------------------------------------------------------
    def push(self, frame: proto.Frame) -> None:
        """Queue a frame; a client that cannot keep up is disconnected."""
        self.push_raw(proto.encode(frame, self.vsn))

    def push_raw(self, data: str | bytes) -> None:
        """Queue an encoded text (str) or binary (bytes) frame."""
        if self._closing:
            return
        try:
            self._outbox.put_nowait(data)
        except asyncio.QueueFull:
            log.warning("realtime client too slow (%d frames queued); disconnecting",
                        OUTBOX_LIMIT)
            self.close()

    def close(self) -> None:
        """Ask the writer to close the socket after what is already queued."""
        if self._closing:
            return
        self._closing = True
        self._closed.set()
        if self._outbox.full():  # an overflowing client: drop its backlog, close now
            while not self._outbox.empty():
                self._outbox.get_nowait()
        self._outbox.put_nowait(None)

    async def _writer(self) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:
                with contextlib.suppress(Exception):
                    await self.websocket.close(1001)
                return
            if isinstance(text, bytes):
                await self.websocket.send_bytes(text)
            else:
                await self.websocket.send_text(text)

    # -- main loop ----------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            await self._read_loop(writer)
        finally:
            self._closing = True
            for channel in list(self.channels.values()):
                self._drop(channel)
            writer.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(writer, *self._tasks, return_exceptions=True)

    async def _read_loop(self, writer: asyncio.Task[None]) -> None:
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while not writer.done():
                if not await self._read_one(writer, closed):
                    return
        finally:
            closed.cancel()
            await asyncio.gather(closed, return_exceptions=True)

    async def _read_one(self, writer: asyncio.Task[None], closed: asyncio.Future[Any]) -> bool:
        """Handle one client message; False when the session should end."""
        receive = asyncio.ensure_future(self.websocket.receive())
        done, _ = await asyncio.wait({receive, writer, closed}, timeout=self.idle_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if receive not in done:
            receive.cancel()
            await asyncio.gather(receive, return_exceptions=True)
            if closed in done:  # close() was called: let the writer flush, briefly
                await asyncio.wait({writer}, timeout=CLOSE_GRACE_S)
            elif not done:
                log.info("realtime socket idle for %.0f s; closing", self.idle_timeout)
                with contextlib.suppress(Exception):
                    await self.websocket.close(1000)
            return False
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            return False
        text = message.get("text")
        if text is not None:
            await self._handle_text(text)
        return True

    async def _handle_text(self, text: str) -> None:
        try:
            frame = proto.decode(text, self.vsn)
        except proto.FrameError as exc:
            log.info("dropping malformed realtime frame: %s", exc)
            return
        try:
            await self.handle(frame)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # a frame we could not make sense of: dropped, the socket stays (as Realtime does)
            log.warning("dropping realtime frame %s/%s: %r", frame.topic, frame.event, exc)

    # -- frames -------------------------------------------------------------------------
    async def handle(self, frame: proto.Frame) -> None:
        """Dispatch one client frame as a Phoenix socket would."""
        if frame.topic == proto.PHOENIX_TOPIC and frame.event == "heartbeat":
            self.push(proto.reply(frame, "ok", {}))
            return
        if frame.event == "phx_join":
            await self._join(frame)
            return
        channel = self.channels.get(frame.topic)
        if channel is None:
            status = "ok" if frame.event == "phx_leave" else "error"
            self.push(proto.reply(frame, status, {} if status == "ok"
                                  else {"reason": "unmatched topic"}))
            return
        if frame.join_ref is not None and frame.join_ref != channel.join_ref:
            return  # stale join_ref: Phoenix ignores it silently
        if frame.event == "phx_leave":
            self.push(proto.reply(frame, "ok", {}, join_ref=channel.join_ref))
            self._close_channel(channel)
        elif frame.event == "access_token":
            await self._access_token(channel, frame.payload)
        else:
            log.info("ignoring realtime event %r on %s", frame.event, frame.topic)

    async def _join_error(self, frame: proto.Frame, reason: str) -> None:
        if self.hub.join_error_backoff > 0:
            await asyncio.sleep(self.hub.join_error_backoff)
        self.push(proto.reply(frame, "error", {"reason": reason}))

    async def _join(self, frame: proto.Frame) -> None:
        if not frame.topic.startswith(proto.TOPIC_PREFIX):
            self.push(proto.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        old = self.channels.get(frame.topic)
        if old is not None:
            self._close_channel(old)
        sub_topic = frame.topic[len(proto.TOPIC_PREFIX):]
        if not sub_topic:
            await self._join_error(frame, "TopicNameRequired: You must provide a topic name")
            return
        if len(self.channels) >= MAX_CHANNELS:
            await self._join_error(frame, "ChannelRateLimitReached: Too many channels")
            return
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if self.hub.private_only and not _private(payload):
            await self._join_error(frame, "PrivateOnly: This project only allows private "
                                   "channels")
            return
        token = self._channel_token(payload)
        try:
            claims = self._verify(token)
        except auth.TokenRefused as exc:
            await self._join_error(frame, exc.join_reason)
            return
        new_api, entries = _entries(payload, sub_topic)
        channel = Channel(self, frame.topic, frame.join_ref or frame.ref, token, claims,
                          new_api, entries, private=_private(payload))
        if channel.private:  # Realtime Authorization: RLS on realtime.messages, as the user
            reason = await self.hub.authorize(channel, _presence(payload))
            if reason is not None:
                await self._join_error(frame, reason)
                return
            if self.channels.get(frame.topic) is not None or self._closing:
                return  # joined again (or closed) while authorising: this join is stale
        self.channels[frame.topic] = channel
        self.hub.listen(channel)
        response = [{**p, "id": i} if isinstance(p, dict) else p for i, p in entries]
        self.push(proto.reply(frame, "ok", {"postgres_changes": response}))
        self._start(channel, self._subscribe(channel))
        self._start(channel, self._confirm_token_loop(channel))

    def _verify(self, token: Any) -> dict[str, Any]:
        return auth.verify(token, self.hub.jwt_secret, now=self.hub.clock(), key=self.hub.signing_key)

    def resubscribe(self) -> None:
        """Subscribe every joined channel's postgres_changes again (a capture restart):
        each gets a new "Subscribed to PostgreSQL" system message; none is closed."""
        for channel in list(self.channels.values()):
            if channel.entries and not channel.closed:
                self._start(channel, self._subscribe(channel))

    def _channel_token(self, payload: dict[str, Any]) -> str:
        token = payload.get("access_token") or payload.get("user_token")
        if not isinstance(token, str) or token.startswith("sb_"):
            return self.token
        return token

    def _start(self, channel: Channel, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        channel.tasks.add(task)
        self._tasks.add(task)
        task.add_done_callback(channel.tasks.discard)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, channel: Channel) -> None:
        if not channel.entries:
            return
        error = await self.hub.subscribe(channel)
        if channel.closed:
            return
        if error is None:
            channel.system("postgres_changes", "ok", "Subscribed to PostgreSQL")
        else:
            channel.system("postgres_changes", "error", error)

    async def _access_token(self, channel: Channel, payload: Any) -> None:
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or token.startswith("sb_") or token == channel.access_token:
            return
        try:
            claims = self._verify(token)
        except auth.TokenRefused as exc:
            self.shutdown(channel, exc.shutdown_message)
            return
        channel.access_token, channel.claims = token, claims
        if channel.private:  # permissions are recomputed with the new claims
            reason = await self.hub.authorize(channel, True)
            if reason is not None:
                self.shutdown(channel, reason.split(": ", 1)[-1])
                return
        for task in list(channel.tasks):
            task.cancel()
        self._start(channel, self._subscribe(channel))
        self._start(channel, self._confirm_token_loop(channel))

    async def _confirm_token_loop(self, channel: Channel) -> None:
        """Close the channel once its token expires (checked at exp, or every 5 min).

        Time is the hub's clock, re-read at least every ``CLOCK_POLL_S``: a test that moves
        an injected clock past ``exp`` sees the channel close within that.
        """
        while not channel.closed:
            due = self.hub.clock() + min(CONFIRM_TOKEN_S, auth.seconds_left(
                channel.claims, now=self.hub.clock()))
            while (left := due - self.hub.clock()) > 0:
                await asyncio.sleep(min(left, CLOCK_POLL_S))
            try:
                channel.claims = self._verify(channel.access_token)
            except auth.TokenRefused as exc:
                self.shutdown(channel, exc.shutdown_message)
                return

    # -- closing channels ---------------------------------------------------------------
    def shutdown(self, channel: Channel, message: str) -> None:
        """Supabase's ``shutdown_response``: system error, then ``phx_close``."""
        channel.system("system", "error", message)
        self._close_channel(channel)

    def _close_channel(self, channel: Channel) -> None:
        channel.push(proto.close(channel.topic, channel.join_ref))
        self._drop(channel)

    def _drop(self, channel: Channel) -> None:
        channel.closed = True
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        self.hub.unsubscribe(channel)
        current = asyncio.current_task()
        for task in list(channel.tasks):
            if task is not current:
                task.cancel()
