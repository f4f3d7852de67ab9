"""RealtimeClient's pure parts for Broadcast from Database: the binary user-broadcast frame
(as the devserver's encoder, which follows Realtime's V2 serializer, writes it), malformed
binary frames, and the join payload of a system channel on each transport."""

from __future__ import annotations

import json

from tablesync.devserver import realtime_protocol as proto
from tablesync.remote.base import SystemChannel, filter_value, realtime_channels
from tablesync.remote.realtime import RealtimeClient

TOPIC = "realtime:tablesync:system-a"


def _client() -> RealtimeClient:
    return RealtimeClient("http://127.0.0.1:1", "anon", [], on_change=lambda e: None)


def test_binary_user_broadcast_decodes_as_a_broadcast_message() -> None:
    body = {"schema": "public", "table": "tasks", "operation": "UPDATE",
            "record": {"id": "ü,\"1"}, "old_record": {"id": "ü,\"1"}, "id": "m1"}
    frame = proto.user_broadcast(TOPIC, "UPDATE", "m1", json.dumps(body), proto.VSN_2)
    assert isinstance(frame, bytes)
    assert _client()._decode_binary(frame) == (
        None, None, TOPIC, "broadcast", {"event": "UPDATE", "payload": body,
                                         "type": "broadcast"})


def test_malformed_binary_frames_are_refused() -> None:
    good = proto.user_broadcast(TOPIC, "INSERT", "m1", '{"a": 1}', proto.VSN_2)
    assert isinstance(good, bytes)
    client = _client()
    for bad in (b"", good[:4], bytes([3]) + good[1:], good[:5] + b"\xff" + good[6:],
                good[:-3], good.replace(b'{"a"', b'[[[[')):
        assert client._decode_binary(bad) is None, bad


def test_join_payloads_of_the_two_transports() -> None:
    tables = [("tasks", "system_id"), ("projects", "owner")]
    (bc,) = realtime_channels("broadcast", tables, 'a,"b"', extra=[("tablesync_exits", "scope")])
    (pc,) = realtime_channels("postgres_changes", tables, 'a,"b"')
    assert isinstance(bc, SystemChannel) and isinstance(pc, SystemChannel)
    assert bc.topic == pc.topic == 'realtime:tablesync:a,"b"'
    assert bc.tables == ("tasks", "projects", "tablesync_exits") and bc.changes == ()
    assert pc.changes == tuple(tables)
    assert pc.filter("owner") == "owner=eq." + filter_value('a,"b"') == 'owner=eq."a,\\"b\\""'
