"""How many signaling messages one connection may send: 50 messages/s sustained, bursts of 100
(docs/signaling.md). A token bucket (callgate/rate.py) counting messages; the relay's bandwidth
cap (turn/allocation.py) is the same bucket counting bytes."""

from __future__ import annotations

from callgate.clock import Clock
from callgate.rate import TokenBucket

RATE_PER_SECOND = 50.0
BURST = 100


class MessageRateLimiter:
    """`allow()` spends one token if there is one; tokens refill at `rate` per second up to `burst`."""

    __slots__ = ("_bucket", "_clock")

    def __init__(self, clock: Clock, rate: float = RATE_PER_SECOND, burst: int = BURST) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock.monotonic())

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @property
    def burst(self) -> int:
        return int(self._bucket.burst)

    def allow(self) -> bool:
        return self._bucket.take(self._clock.monotonic())
