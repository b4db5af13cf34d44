"""Rate limits every layer may use: a token bucket and a fixed window, both on a monotonic time
the caller passes in (so they are testable without sleeping, and cost no clock read of their own).

- `TokenBucket`: bursts up to `burst`, then `rate` a second. The signaling connections'
  messages (signaling/ratelimit.py), each SIP device's INVITEs (sip/invite_limits.py), each
  trunk's call attempts (sip/trunk_limits.py), each playback ticket's requests
  (recording/playback.py), and in bytes (a packet costs its size) each TURN allocation's
  bandwidth cap (turn/allocation.py).
- `Window`: at most `limit` events a `period`, counted in windows that start at their first
  event. Source addresses' unauthenticated call records (sip/attempts.py), the SIP call
  handlers' audit entries per actor (sip/edge_audit.py) and rate-limited log lines
  (recording/playback.py `LogLimit`, runtime/cluster_seal.py).
"""

from __future__ import annotations


class TokenBucket:
    """Holds up to `burst` tokens (full at first), refilled at `rate` a second; `take` spends one
    (or `cost`)."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = self.burst, now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many (True); else False, and nothing is spent.
        The one place the bucket refills (`level` takes nothing): inline, no `min`/`max`, as
        the TURN bandwidth cap runs it on every packet it relays (bench/relay_cap.py)."""
        tokens = self.tokens
        if now > self.at:  # a clock that went back refills nothing
            tokens += (now - self.at) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.at = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def level(self, now: float) -> float:
        """The tokens there are at `now` (a clock that went back refills nothing)."""
        self.take(now, 0.0)  # refilled to `now`, nothing spent
        return self.tokens

    def wait(self) -> float:
        """Seconds from the last `take` (or `level`) until a token is there (0 if one is)."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


class Window:
    """Counts events in windows of `period` seconds, each starting at its first event."""

    __slots__ = ("count", "period", "start")

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.count = 0

    def hit(self, now: float) -> int:
        """Count an event at `now`; its number in its window (1: the window's first)."""
        if self.start is None or now - self.start >= self.period:
            self.start, self.count = now, 0
        self.count += 1
        return self.count
