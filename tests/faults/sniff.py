"""Pure, incremental parsers the fault proxy runs over the bytes it forwards.

* :class:`RequestSniffer` finds HTTP/1.x request lines in a client->server stream
  (keep-alive, Content-Length and chunked bodies) so retries can be timed.
* :class:`UpgradeSniffer` reads the first response head of a server->client stream and says
  whether it switched protocols (HTTP 101), and where the WebSocket bytes begin.
* :class:`FrameTracker` follows WebSocket frame boundaries, so a frame can be cut in half.

Nothing here does I/O; every ``feed`` consumes its input in a loop bounded by its length.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD = 64 * 1024
METHODS = (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT",
           b"TRACE")


@dataclass(frozen=True)
class RequestHead:
    """One request seen on the wire: ``request_line`` is e.g. ``'GET /x HTTP/1.1'``."""

    request_line: str
    headers: dict[str, str]

    @property
    def method(self) -> str:
        return self.request_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.request_line.split(" ")
        return parts[1] if len(parts) > 1 else ""


def parse_head(raw: bytes) -> tuple[str, dict[str, str]]:
    """First line and lower-cased headers of an HTTP head (without the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers

_SKIP_NEXT = {"body": "head", "chunk_data": "chunk_crlf", "chunk_crlf": "chunk_size"}


class RequestSniffer:
    """Request heads of one client->server HTTP/1.x stream; opaque once it is not HTTP."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "head"   # head|body|chunk_size|chunk_data|chunk_crlf|trailers|opaque
        self._remaining = 0

    @property
    def opaque(self) -> bool:
        """True once the stream stopped being parseable HTTP (not HTTP, or upgraded)."""
        return self._state == "opaque"

    def feed(self, data: bytes) -> list[RequestHead]:
        """Consume ``data``; return the request heads completed in it."""
        if self._state == "opaque":
            return []
        self._buf += data
        found: list[RequestHead] = []
        for _ in range(2 * len(self._buf) + 4):     # each step consumes or changes state
            if not self._buf or self._state == "opaque" or not self._step(found):
                break
        return found

    def _step(self, found: list[RequestHead]) -> bool:
        """One parser step; False when more input is needed."""
        if self._state == "head":
            return self._head(found)
        if self._state in _SKIP_NEXT:
            return self._skip()
        if self._state == "chunk_size":
            return self._chunk_size()
        return self._trailers()

    def _skip(self) -> bool:
        take = min(self._remaining, len(self._buf))
        del self._buf[:take]
        self._remaining -= take
        if self._remaining == 0:
            self._state = _SKIP_NEXT[self._state]
            self._remaining = 2 if self._state == "chunk_crlf" else 0
        return True

    def _head(self, found: list[RequestHead]) -> bool:
        if not self._looks_like_http():
            self._state = "opaque"
            return False
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._state = "opaque"
            return False
        line, headers = parse_head(bytes(self._buf[:end]))
        del self._buf[: end + 4]
        found.append(RequestHead(line, headers))
        self._after_head(headers)
        return True

    def _looks_like_http(self) -> bool:
        first = bytes(self._buf[:8])
        return any(first.startswith(m + b" ") or (m + b" ").startswith(first) for m in METHODS)

    def _after_head(self, headers: dict[str, str]) -> None:
        if "upgrade" in headers.get("connection", "").lower():
            self._state = "opaque"     # whatever follows is not HTTP any more
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
        else:
            length = headers.get("content-length", "0").strip() or "0"
            self._remaining = int(length) if length.isdigit() else 0
            self._state = "body" if self._remaining else "head"

    def _chunk_size(self) -> bool:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._state = "opaque"
            return False
        text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
        del self._buf[: end + 2]
        try:
            size = int(text, 16)
        except ValueError:
            self._state = "opaque"
            return False
        if size == 0:
            self._state = "trailers"
        else:
            self._remaining, self._state = size, "chunk_data"
        return True

    def _trailers(self) -> bool:
        end = self._buf.find(b"\r\n")
        if end < 0:
            return False
        del self._buf[: end + 2]
        if end == 0:                # the blank line ending the trailers
            self._state = "head"
        return True


class UpgradeSniffer:
    """Reads the first response head of a server->client stream (101 = WebSocket follows)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False
        self.upgraded = False
        self.status_line = ""

    def feed(self, data: bytes) -> int | None:
        """Consume ``data``; once the head is complete return how many bytes of ``data``
        belong to it (the rest is the upgraded protocol); None while incomplete or done."""
        if self.done:
            return None
        before = len(self._buf)
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD or not b"HTTP/".startswith(bytes(self._buf[:5])):
                self.done = True
            return None
        self.done = True
        self.status_line, _ = parse_head(bytes(self._buf[:end]))
        parts = self.status_line.split(" ")
        self.upgraded = len(parts) > 1 and parts[1] == "101"
        self._buf.clear()
        return end + 4 - before


@dataclass(frozen=True)
class Frame:
    """A frame whose header was seen: absolute stream offset, header and payload sizes."""

    start: int
    header_len: int
    payload_len: int

    @property
    def end(self) -> int:
        return self.start + self.header_len + self.payload_len

    def midpoint(self) -> int:
        """An absolute offset strictly inside the frame (mid-payload when there is one)."""
        if self.payload_len == 0:
            return self.start + 1
        return self.start + self.header_len + self.payload_len // 2


class FrameTracker:
    """Follows RFC 6455 frame boundaries through a byte stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self.offset = 0            # absolute number of bytes fed so far
        self._head = bytearray()   # a partial frame header
        self._skip = 0             # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames whose header completed inside it."""
        frames: list[Frame] = []
        pos = 0
        while pos < len(data):
            if self._skip:
                take = min(self._skip, len(data) - pos)
                self._skip -= take
                pos += take
                continue
            start = self.offset + pos - len(self._head)
            self._head.append(data[pos])
            pos += 1
            size = _header_size(self._head)
            if size is not None and len(self._head) == size:
                payload = _payload_len(self._head)
                frames.append(Frame(start, size, payload))
                self._head.clear()
                self._skip = payload
        self.offset += len(data)
        return frames


def _header_size(head: bytearray) -> int | None:
    """Total header length once the first two bytes are known, else None."""
    if len(head) < 2:
        return None
    length7 = head[1] & 0x7F
    extra = 2 if length7 == 126 else 8 if length7 == 127 else 0
    mask = 4 if head[1] & 0x80 else 0
    return 2 + extra + mask


def _payload_len(head: bytearray) -> int:
    length7 = head[1] & 0x7F
    if length7 == 126:
        return int.from_bytes(head[2:4], "big")
    if length7 == 127:
        return int.from_bytes(head[2:10], "big")
    return length7
