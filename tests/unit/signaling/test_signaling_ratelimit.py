"""The per-connection token bucket on a manual clock."""

from __future__ import annotations

import pytest

from callgate.clock import ManualClock
from callgate.signaling import MessageRateLimiter


def test_burst_of_100_then_refused() -> None:
    bucket = MessageRateLimiter(ManualClock())
    assert all(bucket.allow() for _ in range(100))
    assert not bucket.allow()


def test_refills_at_50_per_second() -> None:
    clock = ManualClock()
    bucket = MessageRateLimiter(clock)
    for _ in range(100):
        bucket.allow()
    clock.advance(0.1)  # 5 tokens
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]


def test_sustained_50_per_second_is_allowed_and_60_is_not() -> None:
    clock = ManualClock()
    bucket = MessageRateLimiter(clock)
    allowed = 0
    for _ in range(50 * 20):  # 20 s at exactly 50/s after a full burst
        clock.advance(0.02)
        allowed += bucket.allow()
    assert allowed == 1000
    refused = 0
    for _ in range(60 * 20):  # 20 s at 60/s: the burst absorbs 100, then 10/s are dropped
        clock.advance(1 / 60)
        refused += not bucket.allow()
    assert 95 <= refused <= 105


def test_never_exceeds_the_burst_after_idle() -> None:
    clock = ManualClock()
    bucket = MessageRateLimiter(clock)
    clock.advance(3600)
    assert sum(bucket.allow() for _ in range(150)) == 100


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    clock = ManualClock()
    bucket = MessageRateLimiter(clock, rate=1, burst=1)
    assert bucket.allow()
    clock.advance(-10)
    assert not bucket.allow()


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_invalid_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        MessageRateLimiter(ManualClock(), rate=rate, burst=burst)
