"""Logging for the command line: one line per record on stderr, every line stamped in UTC.

Text lines read ``2026-01-31T12:00:00.123Z INFO tablesync.engine: message``; with JSON on,
each line is one object with ``ts``, ``level``, ``logger`` and ``msg`` (plus ``exc`` for a
traceback). ``tablesync --log-level LEVEL --log-json`` (or ``TABLESYNC_LOG_LEVEL`` /
``TABLESYNC_LOG_JSON``) choose; ``tablesync run`` shows INFO by default, other commands
WARNING. Other libraries' records (sqlglot, httpx, uvicorn's access log, ...) show from
ERROR up, all of them with DEBUG. Library code never configures logging: an embedding app
keeps its own.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Callable, TextIO

__all__ = ["LEVELS", "JsonFormatter", "UtcFormatter", "configure", "parse_level", "scrub"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_NAME = "tablesync-cli"
# A second line of defence (nothing logs tokens on purpose): the shapes the status page
# scrubs too (tablesync/web/app.py), masked in every line written.
_SECRETS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:apikey|api_key|password|refresh_token|access_token)[\"']?\s*[:=]\s*"
               r"[\"']?)[^\s\"'&,;]+"),
]


def scrub(text: str) -> str:
    """``text`` with token-shaped substrings replaced by ``***``."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def _utc(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


class UtcFormatter(logging.Formatter):
    """``<ISO UTC> <LEVEL> <logger>: <message>`` (traceback lines follow, as usual)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": _utc(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps({k: scrub(v) for k, v in doc.items()}, ensure_ascii=False)


def parse_level(text: str) -> int:
    """A level name (any case) or number; ValueError naming the choices otherwise."""
    name = text.strip().upper()
    if name in LEVELS:
        return int(getattr(logging, name))
    if name.isdigit():
        return int(name)
    raise ValueError(f"unknown log level {text!r} (one of {', '.join(LEVELS)})")


class _OursFirst(logging.Filter):
    """tablesync's records at the chosen level; other libraries' from ERROR (all at DEBUG)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name == "tablesync" or record.name.startswith("tablesync.")
                or record.levelno >= logging.ERROR or self.level <= logging.DEBUG)


def configure(level: int, *, json_lines: bool = False,
              stream: TextIO | None = None) -> Callable[[], None]:
    """Send records at ``level`` and above to ``stream`` (stderr) in the chosen format;
    returns the function that undoes it (the CLI calls it when the command ends, so a
    command run in-process, e.g. by tests, leaves the root logger as it found it).
    A second call replaces the handler the first one installed."""
    root = logging.getLogger()
    old_level = root.level
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else UtcFormatter())
    handler.addFilter(_OursFirst(level))
    root.addHandler(handler)
    root.setLevel(level)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(old_level)

    return restore
