"""Phoenix frame encoding (pure)."""

from __future__ import annotations

import json

import pytest

from tablesync.devserver import realtime_protocol as proto


def test_decode_v1_requires_phoenix_keys() -> None:
    frame = proto.decode('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}',
                         proto.VSN_1)
    assert frame == proto.Frame(None, None, "phoenix", "heartbeat", {})
    with pytest.raises(proto.FrameError, match="ref"):
        proto.decode('{"topic":"t","event":"e","payload":{}}', proto.VSN_1)
    with pytest.raises(proto.FrameError):
        proto.decode('["1","1","t","e",{}]', proto.VSN_1)


def test_decode_v2_arrays() -> None:
    frame = proto.decode('["1","2","realtime:x","phx_join",{"a":1}]', proto.VSN_2)
    assert frame == proto.Frame("1", "2", "realtime:x", "phx_join", {"a": 1})
    for bad in ('{"topic":"t"}', '["1","2","t","e"]', "nope", '[1,2,3,4,5]'):
        with pytest.raises(proto.FrameError):
            proto.decode(bad, proto.VSN_2)


def test_encode_v1_omits_join_ref_and_v2_is_an_array() -> None:
    frame = proto.Frame("1", "3", "realtime:x", "phx_reply", {"status": "ok", "response": {}})
    assert json.loads(proto.encode(frame, proto.VSN_1)) == {
        "topic": "realtime:x", "event": "phx_reply", "ref": "3",
        "payload": {"status": "ok", "response": {}}}
    assert json.loads(proto.encode(frame, proto.VSN_2)) == [
        "1", "3", "realtime:x", "phx_reply", {"status": "ok", "response": {}}]


def test_system_close_and_reply_shapes() -> None:
    sys_frame = proto.system("realtime:room", "4", "postgres_changes", "ok", "Subscribed")
    assert sys_frame == proto.Frame("4", None, "realtime:room", "system", {
        "extension": "postgres_changes", "status": "ok", "message": "Subscribed",
        "channel": "room"})
    assert proto.close("realtime:room", "4") == proto.Frame("4", "4", "realtime:room",
                                                            "phx_close", {})
    req = proto.Frame("4", "9", "realtime:room", "phx_leave", {})
    assert proto.reply(req, "ok", {}).payload == {"status": "ok", "response": {}}


def test_vsn_and_subscription_ids() -> None:
    assert proto.parse_vsn(None) == proto.VSN_1 and proto.parse_vsn("2.0.0") == proto.VSN_2
    with pytest.raises(proto.FrameError):
        proto.parse_vsn("3.0.0")
    a = {"event": "*", "schema": "public", "table": "t", "filter": "id=eq.1"}
    b = dict(reversed(list(a.items())))
    assert proto.subscription_id(a) == proto.subscription_id(b)
    assert proto.subscription_id(a) != proto.subscription_id({**a, "filter": "id=eq.2"})
    assert 0 <= proto.subscription_id(a) < 2**27
