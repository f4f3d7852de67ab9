"""Retry timing: the pure gap checks, and real retries measured by the proxy's request log."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Sequence

import httpx
import pytest

from .proxy import FaultProxy
from .schedule import assert_backoff, backoff_schedule, check_gaps, gaps, windows

BASE = 0.1                      # a scaled-down 1, 2, 4, 8 s schedule keeps the tests fast
SLACK = 0.15


def _times(delays: Sequence[float], start: float = 100.0) -> list[float]:
    out = [start]
    for d in delays:
        out.append(out[-1] + d)
    return out


def test_schedule_doubles_up_to_the_cap() -> None:
    assert backoff_schedule(6) == [1, 2, 4, 8, 8, 8]
    assert backoff_schedule(3, base=0.5, factor=3, cap=10) == [0.5, 1.5, 4.5]
    assert gaps([1.0, 1.5, 3.5]) == [0.5, 2.0]


def test_windows_widen_down_by_jitter_and_up_by_slack_and_respect_retry_after() -> None:
    w = windows([4.0], jitter=0.25, slack=0.5, early=0)[0]
    assert (w.low, w.high) == (3.0, 4.5)
    w = windows([1.0], jitter=0.25, slack=0.5, early=0, retry_after=2.0)[0]
    assert (w.low, w.high) == (2.0, 2.5)


def test_jittered_retries_pass() -> None:
    rng = random.Random(7)
    delays = [d * (1 - 0.25 * rng.random()) + 0.02 for d in backoff_schedule(5)]
    assert check_gaps(_times(delays), backoff_schedule(5), jitter=0.25) == []
    assert_backoff(_times(delays), backoff_schedule(5), jitter=0.25)


@pytest.mark.parametrize("delays,problem", [
    ([1, 1, 1, 1], "retry 2: gap 1.000 s outside [1.490, 2.250] (nominal 2 s)"),
    ([1, 2, 4, 9], "retry 4: gap 9.000 s outside"),
    ([0.5, 2, 4, 8], "retry 1: gap 0.500 s"),
    ([1, 2, 4], "expected 4 retries (5 attempts), saw 3 (4 attempts)"),
])
def test_wrong_schedules_are_named(delays: list[float], problem: str) -> None:
    problems = check_gaps(_times(delays), backoff_schedule(4), jitter=0.25)
    assert any(p.startswith(problem) for p in problems), problems
    with pytest.raises(AssertionError, match="gaps: "):
        assert_backoff(_times(delays), backoff_schedule(4), jitter=0.25)


def _retry(call: object, delays: Sequence[float]) -> None:
    """A client that retries ``call`` after each failure, sleeping ``delays``."""
    for delay in [*delays, None]:
        try:
            ok = call()  # type: ignore[operator]
        except (httpx.TransportError, OSError):
            ok = False
        if ok or delay is None:
            return
        time.sleep(delay)


def _jittered(nominal: Sequence[float], seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [d * (1 - 0.25 * rng.random()) for d in nominal]


def test_http_retries_are_measured_from_the_request_log(http_proxy: FaultProxy) -> None:
    nominal = backoff_schedule(4, base=BASE, cap=8 * BASE)
    with httpx.Client(base_url=http_proxy.url, timeout=2) as client:
        _retry(lambda: client.get("/fail").status_code < 500, _jittered(nominal))
    times = http_proxy.request_times("GET /fail")
    assert len(times) == 5
    assert_backoff(times, nominal, jitter=0.25, slack=SLACK)


def test_a_client_without_backoff_fails_the_check(http_proxy: FaultProxy) -> None:
    nominal = backoff_schedule(4, base=BASE, cap=8 * BASE)
    with httpx.Client(base_url=http_proxy.url, timeout=2) as client:
        _retry(lambda: client.get("/fail").status_code < 500, [BASE] * 4)
    problems = check_gaps(http_proxy.request_times("/fail"), nominal, jitter=0.25, slack=SLACK)
    assert [p.split(":")[0] for p in problems] == ["retry 2", "retry 3", "retry 4"]


def test_reconnects_under_reset_are_measured_from_the_connect_log(
        echo_proxy: FaultProxy) -> None:
    nominal = backoff_schedule(3, base=BASE, cap=8 * BASE)
    echo_proxy.mode = "reset"

    def attempt() -> bool:
        with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=2) as s:
            s.sendall(b"x")
            return s.recv(1) == b"x"

    _retry(attempt, _jittered(nominal))
    assert_backoff(echo_proxy.connect_times(), nominal, jitter=0.25, slack=SLACK)
