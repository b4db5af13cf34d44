"""Per-trunk limits, the toll-fraud guard (docs/sip.md, "Trunk limits").

Each trunk has at most `max_calls` calls at once (inbound and outbound together: the channels
the carrier sells) and at most `max_cps` new call attempts a second (a token bucket holding
`max_cps` tokens, at least one, so a burst of that many passes). Past a limit a call is refused with a precise
SIP response (RFC 3261 §21): `486 Busy Here` when every channel is in use (the carrier's own
answer for a full trunk), `503 Service Unavailable` with `Retry-After` when attempts come faster
than the rate (§21.5.4: try again later). Refusals are counted per trunk and limit for
Prometheus; the first refusal of a run is logged at WARNING and audited (`sip.trunk.limit`), as
an alert that someone may be pumping calls through the trunk.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from callgate.clock import Clock

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call the trunk's limits refuse: which limit, and the SIP response to give."""

    limit: str  # "calls" or "rate"
    status: int
    reason: str
    retry_after: int | None = None


FULL = Refusal("calls", 486, "Busy Here (all trunk channels in use)")
TOO_FAST = Refusal("rate", 503, "Service Unavailable (trunk call rate)", RETRY_AFTER_S)


class TrunkLimited(Exception):
    """`SipEdge.dial` refused a call at the trunk's limits."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal

    @property
    def headers(self) -> list[tuple[str, str]]:
        retry = self.refusal.retry_after
        return [] if retry is None else [("Retry-After", str(retry))]

    @property
    def cdr(self) -> tuple[str, str]:
        """(disposition, reason) of the refused call's record."""
        return (
            ("busy", "trunk-busy")
            if self.refusal.limit == "calls"
            else ("failed", "trunk-rate-limited")
        )


class _Bucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.size = rate, max(1.0, rate)  # a rate under 1/s still lets one through
        self.tokens, self.at = self.size, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class TrunkLimits:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.active: Counter[str] = Counter()  # trunk -> calls now
        self.attempts: Counter[tuple[str, str]] = Counter()  # (trunk, direction) -> attempts
        self.refused: Counter[tuple[str, str]] = Counter()  # (trunk, limit) -> refusals
        self._buckets: dict[str, _Bucket] = {}
        self._refusing: set[str] = set()  # trunks in a run of refusals

    def acquire(
        self,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        direction: str,
        emergency: bool = False,
    ) -> Refusal | None:
        """Take a channel of `trunk` for a new call, or say which limit refuses it. A call
        that got one gives it back with `release`. An emergency call is counted, never refused:
        a flood of other calls must not keep 112 from getting through."""
        self.attempts[(trunk, direction)] += 1
        refusal: Refusal | None = None
        if emergency:
            pass
        elif max_calls is not None and self.active[trunk] >= max_calls:
            refusal = FULL
        elif max_cps is not None:
            now = self._clock.monotonic()
            bucket = self._buckets.get(trunk)
            if bucket is None:
                bucket = self._buckets[trunk] = _Bucket(max_cps, now)
            if not bucket.take(now):
                refusal = TOO_FAST
        if refusal is None:
            self.active[trunk] += 1
            self._refusing.discard(trunk)
            return None
        self.refused[(trunk, refusal.limit)] += 1
        return refusal

    def first_of_run(self, trunk: str) -> bool:
        """Is this the first refusal since the trunk last took a call? (alert once a run)"""
        if trunk in self._refusing:
            return False
        self._refusing.add(trunk)
        log.warning("sip: trunk %s is refusing calls at its limits (toll-fraud guard)", trunk)
        return True

    def refusing(self, trunk: str) -> bool:
        """Has the trunk refused calls since it last took one?"""
        return trunk in self._refusing

    def release(self, trunk: str) -> None:
        if self.active[trunk] > 0:
            self.active[trunk] -= 1
