"""Phoenix channel frames as Supabase Realtime speaks them (pure, no I/O).

vsn 1.0.0: JSON objects; the server omits ``join_ref`` in what it sends.
vsn 2.0.0: JSON arrays ``[join_ref, ref, topic, event, payload]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tablesync.devserver.errors import PayloadError

VSN_1 = "1.0.0"
VSN_2 = "2.0.0"
PHOENIX_TOPIC = "phoenix"
TOPIC_PREFIX = "realtime:"


class FrameError(PayloadError):
    """A client frame that is not valid for the socket's protocol version."""


@dataclass(frozen=True)
class Frame:
    """One Phoenix message in either direction."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


def parse_vsn(raw: str | None) -> str:
    """The protocol version for a ``vsn`` query value (absent means 1.0.0)."""
    if raw is None or raw.startswith("1."):
        return VSN_1
    if raw.startswith("2."):
        return VSN_2
    raise FrameError(f"unsupported vsn {raw!r}: Realtime accepts 1.0.0 and 2.0.0")


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"ref must be a string or null, got {value!r}")


def decode(text: str, vsn: str) -> Frame:
    """Parse one text frame sent by a client."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from exc
    if vsn == VSN_2:
        if not isinstance(data, list) or len(data) != 5:
            raise FrameError("vsn 2.0.0 frames are [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = data
    else:
        if not isinstance(data, dict):
            raise FrameError("vsn 1.0.0 frames are JSON objects")
        missing = [k for k in ("topic", "event", "payload", "ref") if k not in data]
        if missing:
            raise FrameError(f"frame lacks required key(s) {', '.join(missing)}")
        join_ref, ref = data.get("join_ref"), data["ref"]
        topic, event, payload = data["topic"], data["event"], data["payload"]
    if not isinstance(topic, str) or not isinstance(event, str):
        raise FrameError("topic and event must be strings")
    return Frame(_ref(join_ref), _ref(ref), topic, event, payload)


def encode(frame: Frame, vsn: str) -> str:
    """Serialize one server frame."""
    if vsn == VSN_2:
        body: Any = [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload]
    else:
        body = {"topic": frame.topic, "event": frame.event, "payload": frame.payload,
                "ref": frame.ref}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def reply(request: Frame, status: str, response: Any, *, join_ref: str | None = None) -> Frame:
    """A ``phx_reply`` to ``request`` (same ref, topic and join_ref)."""
    return Frame(join_ref if join_ref is not None else request.join_ref, request.ref,
                 request.topic, "phx_reply", {"status": status, "response": response})


def close(topic: str, join_ref: str | None) -> Frame:
    """``phx_close`` for a channel: ref = join_ref, payload {}."""
    return Frame(join_ref, join_ref, topic, "phx_close", {})


def system(topic: str, join_ref: str | None, extension: str, status: str, message: str) -> Frame:
    """A ``system`` push; ``channel`` is the sub-topic without ``realtime:``."""
    channel = topic[len(TOPIC_PREFIX):] if topic.startswith(TOPIC_PREFIX) else topic
    return Frame(join_ref, None, topic, "system", {
        "extension": extension, "status": status, "message": message, "channel": channel})


def subscription_id(params: Any) -> int:
    """A deterministic integer id for one ``postgres_changes`` entry.

    Supabase uses ``:erlang.phash2(params)`` (range 0..2**27-1); this is a different hash
    with the same range and the same property: equal entries get equal ids.
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).digest()
    return int.from_bytes(digest[:4], "big") % (1 << 27)


USER_BROADCAST = 4  # RealtimeWeb.Socket.V2Serializer's binary "user broadcast" kind


def user_broadcast(topic: str, event: str, message_id: str, payload_json: str,
                   vsn: str) -> str | bytes:
    """A Broadcast-from-Database message for one joined ``topic``, as Realtime sends it.

    vsn 2.0.0: a binary frame ``<<4, topic_size, event_size, meta_size, 1 (json), topic,
    event, meta, payload>>`` (sizes are single bytes, so each part is at most 255 bytes);
    vsn 1.0.0: the JSON push ``{topic, event: "broadcast", payload: {event, payload, type:
    "broadcast", meta: {id}}, ref: null}``. ``payload_json`` is the stored payload's text.
    """
    meta = json.dumps({"id": message_id}, separators=(",", ":"))
    if vsn == VSN_2:
        parts = [p.encode() for p in (topic, event, meta)]
        if any(len(p) > 255 for p in parts):
            raise FrameError("topic, event and meta of a broadcast must be at most 255 bytes")
        head = bytes([USER_BROADCAST, len(parts[0]), len(parts[1]), len(parts[2]), 1])
        return head + b"".join(parts) + payload_json.encode()
    body = {"event": event, "payload": json.loads(payload_json), "type": "broadcast",
            "meta": {"id": message_id}}
    return encode(Frame(None, None, topic, "broadcast", body), vsn)
