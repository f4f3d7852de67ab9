"""tablesync.clock: HLC packing, monotonic stamps, observe, skewed wall clocks."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from tablesync import clock
from tablesync.clock import HLC, FakeClock, SystemClock

HOUR_MS = 3_600_000


@given(st.integers(min_value=0, max_value=2**46), st.integers(min_value=0, max_value=2**16 - 1))
def test_pack_round_trips(ms: int, logical: int) -> None:
    h = clock.pack(ms, logical)
    assert clock.physical_ms(h) == ms
    assert h & clock.LOGICAL_MASK == logical


@given(st.integers(0, 2**46), st.integers(0, 2**16 - 1), st.integers(0, 2**46), st.integers(0, 2**16 - 1))
def test_packing_orders_like_the_pair(m1: int, l1: int, m2: int, l2: int) -> None:
    assert (clock.pack(m1, l1) < clock.pack(m2, l2)) == ((m1, l1) < (m2, l2))


def test_to_iso_renders_utc_milliseconds() -> None:
    assert clock.to_iso(clock.pack(1_800_000_000_123, 7)) == "2027-01-15T08:00:00.123Z"


def test_tick_follows_the_wall_clock() -> None:
    wall = FakeClock(start_ms=1_000)
    hlc = HLC(wall)
    assert hlc.tick() == clock.pack(1_000)
    wall.advance(5)
    assert hlc.tick() == clock.pack(1_005)


def test_ticks_within_one_millisecond_count_up_logically() -> None:
    hlc = HLC(FakeClock(start_ms=1_000))
    stamps = [hlc.tick() for _ in range(3)]
    assert stamps == [clock.pack(1_000, 0), clock.pack(1_000, 1), clock.pack(1_000, 2)]


@given(st.lists(st.integers(min_value=-HOUR_MS, max_value=HOUR_MS), max_size=30))
def test_tick_is_strictly_monotonic_even_when_the_wall_clock_jumps(jumps: list[int]) -> None:
    wall = FakeClock(start_ms=1_800_000_000_000)
    hlc = HLC(wall)
    last = hlc.tick()
    for jump in jumps:
        wall.advance(jump)
        now = hlc.tick()
        assert now > last
        assert now >= clock.pack(wall.now_ms())
        last = now


def test_logical_overflow_carries_into_the_next_millisecond() -> None:
    hlc = HLC(FakeClock(start_ms=1_000), last=clock.pack(1_000, clock.LOGICAL_MASK))
    assert hlc.tick() == clock.pack(1_001, 0)


@given(st.integers(min_value=-HOUR_MS, max_value=HOUR_MS), st.integers(min_value=0, max_value=2**16 - 1))
def test_observe_puts_the_next_tick_above_a_remote_version(skew: int, logical: int) -> None:
    """A node whose clock is up to an hour behind still stamps after what it has seen."""
    remote = clock.pack(1_800_000_000_000 + HOUR_MS, logical)  # from a fast clock
    hlc = HLC(FakeClock(start_ms=1_800_000_000_000, skew_ms=skew))
    hlc.observe(remote)
    assert hlc.last == remote
    assert hlc.tick() > remote


def test_observe_never_moves_the_clock_backwards() -> None:
    hlc = HLC(FakeClock(start_ms=5_000))
    first = hlc.tick()
    hlc.observe(clock.pack(1))
    assert hlc.last == first
    assert hlc.tick() > first


def test_skew_shifts_the_wall_clock() -> None:
    ahead = FakeClock(start_ms=10_000, skew_ms=HOUR_MS)
    behind = FakeClock(start_ms=10_000 + 2 * HOUR_MS, skew_ms=-HOUR_MS)
    assert ahead.now_ms() == behind.now_ms() == 10_000 + HOUR_MS
    ahead.advance(1)
    assert ahead.now_ms() == 10_000 + HOUR_MS + 1


def test_skewed_writer_that_saw_a_version_still_wins_over_it() -> None:
    """Causality beats skew: B, an hour behind, edits after seeing A's write and wins."""
    a = HLC(FakeClock(skew_ms=HOUR_MS))
    b = HLC(FakeClock(skew_ms=-HOUR_MS))
    seen = a.tick()
    b.observe(seen)
    assert b.tick() > seen


def test_ticks_are_unique_across_threads() -> None:
    hlc = HLC(FakeClock(start_ms=1_000))  # frozen wall clock: only the lock keeps them apart
    out: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [hlc.tick() for _ in range(500)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(out) == len(set(out)) == 2000


def test_system_clock_reads_the_current_time() -> None:
    import time

    before = time.time_ns() // 1_000_000
    now = SystemClock().now_ms()
    after = time.time_ns() // 1_000_000
    assert before <= now <= after
    assert HLC().tick() >= clock.pack(before)


def test_manual_clock_stands_still_until_advanced() -> None:
    import time

    c = clock.ManualClock(1_000.0)
    assert c() == c.time() == 1_000.0 and c.now_ms() == 1_000_000
    time.sleep(0.01)
    assert c() == 1_000.0
    c.advance(2.5)
    assert c() == 1_002.5
    try:
        c.advance(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("a ManualClock went backwards")
    assert abs(clock.ManualClock()() - time.time()) < 5       # starts at the real time


def test_manual_clock_following_real_time_adds_the_jumps() -> None:
    import time

    c = clock.ManualClock(follow_real_time=True)
    t0 = c()
    c.advance(100)
    assert 100 <= c() - t0 < 105
    assert HLC(c).tick() >> clock.LOGICAL_BITS >= int(t0 * 1000)   # a WallClock too

