"""Helpers shared by the tests (not a test module).

Importable from any test as ``helpers`` (``tests/`` is on ``sys.path`` because the root
conftest lives there). Wait on an observable condition, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

POLL_S = 0.02


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``cond`` every 20 ms until truthy and return its value; AssertionError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(POLL_S)


async def async_wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """:func:`wait_for` inside an event loop: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.01)
