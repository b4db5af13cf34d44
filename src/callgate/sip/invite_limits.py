"""Each device's INVITE rate at the edge (docs/sip.md, "Limits").

Every INVITE a device sends may end in a call record and an audit entry, even one refused
later (a dial-out over the user's share, a forbidden media address): a device flooding INVITEs
would grow the records and the hash-chained audit log without bound. So each device credential
has a token bucket (BURST INVITEs, refilled at RATE a second); a new INVITE without a token is
refused at the edge with `503 Service Unavailable` and `Retry-After` (RFC 3261 §21.5.4,
§20.33), before any record is written. Refusals are counted (a metric), and only the first of a
run — until the device's next INVITE is taken — is audited (`sip.invite.limit`), as
`sip.dialout.limit` is. In-dialog re-INVITEs are not counted; trunks have their own call rate
(trunk_limits.py).
"""

from __future__ import annotations

import math

from callgate.clock import Clock
from callgate.rate import TokenBucket

BURST = 20  # INVITEs a device may send at once
RATE = 1.0  # INVITEs a second after that (far above a person's dialling)
MAX_DEVICES = 10_000  # buckets kept; full ones are dropped past this


class InviteLimits:
    """Per-device token buckets (module doc)."""

    def __init__(self, clock: Clock, burst: int = BURST, rate: float = RATE) -> None:
        self._clock = clock
        self._burst, self._rate = burst, rate
        self._buckets: dict[str, TokenBucket] = {}  # device -> its bucket
        self._refusing: set[str] = set()
        self.refused = 0

    def take(self, device: str) -> float | None:
        """None when `device` may send this INVITE; else the seconds until it may."""
        now = self._clock.monotonic()
        bucket = self._buckets.get(device) or self._new(device, now)
        if bucket.take(now):
            self._refusing.discard(device)
            return None
        self.refused += 1
        return bucket.wait()

    def first_of_run(self, device: str) -> bool:
        """Is this the device's first refusal since its last INVITE was taken? (audit once)"""
        if device in self._refusing:
            return False
        if len(self._refusing) < MAX_DEVICES:
            self._refusing.add(device)
        return True

    def _new(self, device: str, now: float) -> TokenBucket:
        if len(self._buckets) >= MAX_DEVICES:
            full = [d for d, b in self._buckets.items() if b.level(now) >= b.burst]
            for gone in full:
                del self._buckets[gone]
            if len(self._buckets) >= MAX_DEVICES:
                self._buckets.pop(next(iter(self._buckets)))
        bucket = self._buckets[device] = TokenBucket(self._rate, self._burst, now)
        return bucket


def retry_after(seconds: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait of `seconds`."""
    return str(max(1, math.ceil(seconds)))
