"""How many signaling messages one connection may send: 50 messages/s sustained, bursts of 100
(docs/signaling.md). A token bucket counting messages; the relay's bandwidth cap, which counts
bytes, is turn/allocation.py's `TokenBucket`."""

from __future__ import annotations

from callgate.clock import Clock

RATE_PER_SECOND = 50.0
BURST = 100


class MessageRateLimiter:
    """`allow()` spends one token if there is one; tokens refill at `rate` per second up to `burst`."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, clock: Clock, rate: float = RATE_PER_SECOND, burst: int = BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = clock.monotonic()

    def allow(self) -> bool:
        now = self._clock.monotonic()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
