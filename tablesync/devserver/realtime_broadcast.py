"""Broadcast from Database for the devserver's Realtime service.

Hosted Realtime replicates every INSERT into ``realtime.messages`` (what ``realtime.send``
and ``realtime.broadcast_changes`` write) and forwards it to the channels joined on the
message's topic: private messages to private channels whose join was authorised for
broadcast reads (RLS on ``realtime.messages``), public ones to public channels. Messages
over the project's payload limit, or over its messages-per-second budget, are dropped before
fan-out (logged, the clients are not told). This module keeps the topic registry and does
the fan-out; the committed messages arrive through NOTIFY (``realtime.sql``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import psycopg

from tablesync.devserver import realtime_capture as capture
from tablesync.devserver import realtime_protocol as proto
from tablesync.devserver.errors import PayloadError
from tablesync.devserver.realtime_session import Channel

__all__ = ["Broadcasts", "DEFAULT_MAX_PAYLOAD_BYTES"]

log = logging.getLogger(__name__)

# Supabase's Tenants.validate_payload_size: max_payload_size_in_kb * 1000 + 500 bytes of
# padding; the free plan's limit is 256 KB.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1000 + 500


class Broadcasts:
    """Channels by (topic, private) and the fan-out of committed broadcast messages."""

    def __init__(self, admit: Callable[[], bool],
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self._admit = admit
        self.max_payload_bytes = max_payload_bytes
        self._topics: dict[tuple[str, bool], list[Channel]] = {}
        self.delivered = 0  # frames pushed (for tests and benchmarks)
        self.oversize = 0  # messages dropped for their size

    def add(self, channel: Channel) -> None:
        """Route this channel's topic's messages to it (public or private ones)."""
        self._topics.setdefault((channel.sub_topic, channel.private), []).append(channel)

    def remove(self, channel: Channel) -> None:
        """Stop routing to this channel."""
        key = (channel.sub_topic, channel.private)
        live = self._topics.get(key)
        if live and channel in live:
            live.remove(channel)
            if not live:
                del self._topics[key]

    async def dispatch(self, conn: psycopg.AsyncConnection[Any], note: str) -> None:
        """Deliver one notified message (its JSON, or the id of a large one)."""
        if not note.startswith("{"):
            text = await capture.stored_message(conn, note)
            if text is None:
                log.warning("realtime: broadcast message %s is gone; dropped", note[:40])
                return
            note = text
        try:
            msg = json.loads(note)
            topic, event, private = str(msg["topic"]), str(msg.get("event") or ""), \
                bool(msg.get("private"))
            message_id, payload = str(msg["id"]), msg.get("payload")
        except (ValueError, KeyError, TypeError) as exc:
            raise PayloadError(f"unexpected broadcast notification: {note[:60]!r}") from exc
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        if len(body.encode()) > self.max_payload_bytes:
            self.oversize += 1
            log.warning("realtime: UnableToBroadcastChanges: payload of %d bytes on topic %r"
                        " is over the %d-byte limit; dropped", len(body.encode()), topic,
                        self.max_payload_bytes)
            return
        if not self._admit():
            return  # over the project's messages per second: dropped before fan-out
        for channel in list(self._topics.get((topic, private), ())):
            if channel.closed or (private and channel.broadcast_read is not True):
                continue
            try:
                frame = proto.user_broadcast(channel.topic, event, message_id, body,
                                             channel.session.vsn)
            except proto.FrameError as exc:
                log.warning("realtime: cannot send a broadcast on %s: %s", channel.topic, exc)
                continue
            channel.session.push_raw(frame)
            self.delivered += 1
