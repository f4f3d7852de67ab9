"""The proxy's stream parsers: request lines, the 101 upgrade, WebSocket frame boundaries."""

from __future__ import annotations

import pytest

from .sniff import Frame, FrameTracker, RequestSniffer, UpgradeSniffer

KEEPALIVE = (b"POST /rest/v1/rpc/x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
             b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
             b"PATCH /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5;ext=1\r\nGET /\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
             b"DELETE /c HTTP/1.1\r\n\r\n")
LINES = ["POST /rest/v1/rpc/x HTTP/1.1", "GET /a HTTP/1.1", "PATCH /b HTTP/1.1",
         "DELETE /c HTTP/1.1"]


def _feed_in(sniffer: RequestSniffer, data: bytes, size: int) -> list[str]:
    return [h.request_line for i in range(0, len(data), size)
            for h in sniffer.feed(data[i:i + size])]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(KEEPALIVE)])
def test_request_lines_of_a_keepalive_stream_in_any_chunking(size: int) -> None:
    sniffer = RequestSniffer()
    assert _feed_in(sniffer, KEEPALIVE, size) == LINES
    assert not sniffer.opaque


def test_bodies_that_look_like_requests_are_not_counted() -> None:
    body = b"GET /fake HTTP/1.1\r\n\r\n"
    data = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    heads = RequestSniffer().feed(data)
    assert [(h.method, h.target) for h in heads] == [("POST", "/x")]


def test_upgrade_request_makes_the_rest_opaque() -> None:
    sniffer = RequestSniffer()
    heads = sniffer.feed(b"GET /realtime/v1/websocket HTTP/1.1\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\n\r\n\x81\x05GET /")
    assert [h.headers["upgrade"] for h in heads] == ["websocket"]
    assert sniffer.opaque and sniffer.feed(b"GET / HTTP/1.1\r\n\r\n") == []


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x02\x00", b"SSH-2.0-x\r\n", b"GETX / HTTP/1.1"])
def test_non_http_is_opaque(data: bytes) -> None:
    sniffer = RequestSniffer()
    assert sniffer.feed(data) == [] and sniffer.opaque


def test_upgrade_sniffer_finds_the_split_between_head_and_frames() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    data = head + b"\x81\x02hi"
    sniffer = UpgradeSniffer()
    assert sniffer.feed(data[:20]) is None
    assert sniffer.feed(data[20:]) == len(head) - 20
    assert sniffer.upgraded and sniffer.status_line.startswith("HTTP/1.1 101")
    assert sniffer.feed(b"more") is None


@pytest.mark.parametrize("data", [b"HTTP/1.1 200 OK\r\n\r\n", b"\x00\x01binary"])
def test_upgrade_sniffer_other_answers_are_not_upgrades(data: bytes) -> None:
    sniffer = UpgradeSniffer()
    sniffer.feed(data)
    assert sniffer.done and not sniffer.upgraded


def _frame(payload: bytes, masked: bool = False) -> bytes:
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x82, mask_bit | n])
    elif n < 65536:
        head = bytes([0x82, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, mask_bit | 127]) + n.to_bytes(8, "big")
    return head + (b"\x00\x00\x00\x00" if masked else b"") + payload


@pytest.mark.parametrize("size", [1, 5, 1000, 10**6])
def test_frame_tracker_follows_all_three_length_forms(size: int) -> None:
    stream = _frame(b"a" * 5) + _frame(b"b" * 300, masked=True) + _frame(b"c" * 70000) + _frame(b"")
    tracker = FrameTracker()
    frames = [f for i in range(0, len(stream), size) for f in tracker.feed(stream[i:i + size])]
    assert frames == [Frame(0, 2, 5), Frame(7, 8, 300), Frame(315, 10, 70000), Frame(70325, 2, 0)]
    assert frames[-1].end == len(stream) == tracker.offset


def test_frame_midpoint_is_strictly_inside_the_frame() -> None:
    for frame in (Frame(10, 2, 0), Frame(10, 2, 1), Frame(10, 10, 70000)):
        assert frame.start < frame.midpoint() < frame.end
