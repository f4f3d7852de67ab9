"""The push's sending side: one worker thread sends prepared batches strictly in order
(:class:`Sender`), and the server's answer to a version too far ahead of its clock is
read here (:func:`server_hlc`)."""

from __future__ import annotations

import re
from typing import Any

from tablesync.model import ApplyOutcome, Outcome
from tablesync.remote.base import Remote

__all__ = ["NotSent", "Sender", "server_hlc"]


_SKEW = re.compile(r"tablesync: clock skew: .*server_hlc=(\d+)")


def server_hlc(outcome: ApplyOutcome) -> int | None:
    """The server's clock (an HLC) from an ``error`` outcome refusing a version too far
    ahead of it; None for any other outcome."""
    if outcome.outcome != Outcome.ERROR or not outcome.message:
        return None
    found = _SKEW.search(outcome.message)
    return int(found.group(1)) if found else None


class NotSent(Exception):
    """A queued batch the sender refused to send (an earlier one failed)."""


class Sender:
    """Sends queued batches strictly one after another (one worker thread); after the first
    failure, or once ``stopped`` is set, every later batch ends unsent (:class:`NotSent`)."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.stopped = False

    def send(self, table: str, rows: list[dict[str, Any]]) -> list[ApplyOutcome]:
        if self.stopped:
            raise NotSent(table)
        try:
            return self.remote.apply(table, rows)
        except BaseException:
            self.stopped = True
            raise
