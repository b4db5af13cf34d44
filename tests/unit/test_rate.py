"""The rate limits' two shapes (callgate/rate.py): a token bucket and a counting window, on the
time their callers pass in."""

from __future__ import annotations

import random

import pytest

from callgate.rate import TokenBucket, Window


def test_a_bucket_lets_a_burst_through_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.5)  # one token a half second
    assert not bucket.take(100.25)
    assert bucket.wait() == pytest.approx(0.25)
    assert bucket.take(100.5) and not bucket.take(100.5)
    # idle for long: full again, never above the burst
    assert bucket.level(1000.0) == 3.0
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_a_bucket_of_bytes_takes_what_a_packet_costs() -> None:
    # the TURN bandwidth cap: 1000 bytes a second, one second of burst; a packet that does not
    # fit spends nothing, so a smaller one after it may still pass
    bucket = TokenBucket(rate=1000, burst=1000, now=0.0)
    assert [bucket.take(0.0, 400) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.0, 200) and not bucket.take(0.0, 1)
    assert not bucket.take(0.3, 400) and bucket.take(0.4, 400)


def test_a_clock_that_goes_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=50.0)
    assert bucket.take(50.0)
    assert not bucket.take(10.0)
    assert not bucket.take(50.5)  # half a token since 50.0, not 40.5 s of them
    assert bucket.take(51.0)


def test_the_level_is_what_a_take_may_spend() -> None:
    # one refill for both: at any time, asked in any order, a clock going back included
    rng = random.Random(3)
    bucket, now = TokenBucket(rate=50.0, burst=20, now=0.0), 0.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.001, 0.02, 0.3, -0.5])
        level, cost = bucket.level(now), rng.choice([0.5, 1.0, 3.0])
        assert 0.0 <= level <= 20.0
        assert bucket.take(now, cost) == (level >= cost)
        assert bucket.level(now) == pytest.approx(level - cost if level >= cost else level)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 5), (-1.0, 5), (1.0, 0)])
def test_a_bucket_that_could_never_let_anything_through_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        TokenBucket(rate, burst, now=0.0)


def test_a_window_numbers_its_events_and_starts_again_after_its_period() -> None:
    window = Window(60.0)
    assert [window.hit(t) for t in (5.0, 6.0, 64.9)] == [1, 2, 3]
    assert window.hit(65.0) == 1  # 60 s after the window's first event: a new window
    assert window.hit(124.0) == 2
    assert window.hit(125.0) == 1
