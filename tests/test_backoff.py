from __future__ import annotations

import random
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from tablesync.backoff import Backoff, parse_retry_after


def test_nominal_schedule_is_1_2_4_8_then_offline() -> None:
    b = Backoff(jitter=0.0, max_retries=5, offline_interval=60.0)
    delays = [b.next_delay() for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 60.0, 60.0, 60.0]
    assert b.offline


def test_not_offline_before_max_retries() -> None:
    b = Backoff(jitter=0.0, max_retries=5)
    for _ in range(4):
        b.next_delay()
    assert not b.offline
    b.next_delay()
    assert b.offline


def test_cap_holds_with_more_retries() -> None:
    b = Backoff(jitter=0.0, max_retries=8, cap=8.0)
    assert [b.next_delay() for _ in range(7)] == [1, 2, 4, 8, 8, 8, 8]


def test_reset_starts_over() -> None:
    b = Backoff(jitter=0.0)
    for _ in range(6):
        b.next_delay()
    b.reset()
    assert not b.offline
    assert b.next_delay() == 1.0


def test_jitter_is_bounded_and_deterministic() -> None:
    a = Backoff(rng=random.Random(7), jitter=0.25)
    b = Backoff(rng=random.Random(7), jitter=0.25)
    da = [a.next_delay() for _ in range(6)]
    db = [b.next_delay() for _ in range(6)]
    assert da == db
    for got, nominal in zip(da, [1, 2, 4, 8, 60, 60]):
        assert nominal * 0.75 <= got <= nominal
    assert len(set(da[:4])) == 4 and da[0] != 1.0  # actually jittered


def test_retry_after_is_honoured_and_capped() -> None:
    b = Backoff(jitter=0.0, max_retry_after=100.0)
    assert b.next_delay(retry_after=30.0) == 30.0
    assert b.next_delay(retry_after=0.5) == 2.0  # never shorter than the schedule
    assert b.next_delay(retry_after=10_000.0) == 100.0


@pytest.mark.parametrize("kwargs", [
    {"base": 0}, {"factor": 0.5}, {"cap": 0.1}, {"max_retries": 0},
    {"offline_interval": 0}, {"jitter": 1.5},
])
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None
    later = datetime.now(timezone.utc) + timedelta(seconds=90)
    got = parse_retry_after(format_datetime(later, usegmt=True))
    assert got is not None and 85 <= got <= 90
    past = datetime.now(timezone.utc) - timedelta(seconds=90)
    assert parse_retry_after(format_datetime(past, usegmt=True)) == 0.0
