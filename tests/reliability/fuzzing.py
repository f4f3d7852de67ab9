"""Hypothesis strategies and helpers for the fuzz tests (no tests here)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def examples(n: int) -> int:
    """``n`` examples locally, a quarter in CI."""
    return max(10, n // 4) if CI else n


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
HOSTILE = st.sampled_from([
    "", " ", "x\"; DROP TABLE tasks; --", "a'b", "a\"b", "a`b", "tasks\x00", "ta sks", "1abc",
    "_tablesync_meta", "sync_queue", "sqlite_master", "SELECT", "name with\nnewline",
    "é", "日本語", "x" * 64, "x" * 300, "a.b", "../../etc/passwd", "${HOME}", "%s", "{0}",
    "\u202e", "-", "_", "__", "a-b",
]) | TEXT
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2)
           | st.integers(max_value=-2**63 + 1) | st.floats(allow_nan=True) | TEXT
           | st.just("x" * 100_000))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if v is None:
        return '""'
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}"
                               for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_dump(doc: dict[str, Any]) -> str:
    """A small TOML writer for nested tables of scalars/lists (enough for sync.toml)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        subs = {k: v for k, v in body.items() if isinstance(v, dict)}
        plain = {k: v for k, v in body.items() if k not in subs}
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{json.dumps(str(k), ensure_ascii=False)}" if prefix
                  else json.dumps(str(k), ensure_ascii=False), v)

    table("", doc)
    return "\n".join(lines) + "\n"


def snapshot_db(path: Path) -> list[Any]:
    """Every user row, queue entry and sync metadata row of a store's database."""
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        return [(n, sorted(map(repr, conn.execute(f'SELECT * FROM "{n}"')))) for n in names]
    finally:
        conn.close()


class CannedServer:
    """A loopback HTTP server answering every request with the body/status set last."""

    def __init__(self) -> None:
        self.status, self.body, self.ctype = 200, b"[]", "application/json"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.ctype)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
