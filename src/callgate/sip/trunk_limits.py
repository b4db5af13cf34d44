"""Per-trunk limits, the toll-fraud guard (docs/sip.md, "Trunk limits").

Each trunk has at most `max_calls` calls at once (inbound and outbound together: the channels
the carrier sells) and at most `max_cps` new call attempts a second (a token bucket holding
`max_cps` tokens, at least one, so a burst of that many passes). Past a limit a call is refused with a precise
SIP response (RFC 3261 §21): `486 Busy Here` when every channel is in use (the carrier's own
answer for a full trunk), `503 Service Unavailable` with `Retry-After` when attempts come faster
than the rate (§21.5.4: try again later). Refusals are counted per trunk and limit for
Prometheus; the first refusal of a run is logged at WARNING and audited (`sip.trunk.limit`), as
an alert that someone may be pumping calls through the trunk.

Per user, on each trunk (dialling out only): at most `max_calls_per_user` calls at once
(`403 Forbidden`: it is the user, not the trunk, who is refused) and `max_calls_per_user_hour`
calls in any hour (`503` with `Retry-After` the seconds until the oldest of that hour's calls
leaves the window, RFC 3261 §20.33). A stolen desk phone password or a compromised account then
cannot pump calls even through an idle trunk. The first refusal of a user's run is audited
(`sip.dialout.limit`) by the edge.

Several signaling nodes (docs/scaling.md): the limits are the cluster's, not each node's. A
`SharedLimits` (runtime/cluster_limits.py, on Redis) decides every admission atomically for all
nodes; `admit` asks it, and this class keeps only the node's own counters (metrics, trunk status,
the alert runs). The shared store unreachable: new calls are refused (`503`, fail closed: a limit
that multiplies with the nodes is a promise not kept), except emergency calls, always let through.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Protocol

from callgate.clock import Clock
from callgate.rate import TokenBucket

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call the trunk's limits refuse: which limit, and the SIP response to give."""

    limit: str  # "calls", "rate", "user-calls", "user-hour" or "unavailable" (cluster store)
    status: int
    reason: str
    retry_after: int | None = None


FULL = Refusal("calls", 486, "Busy Here (all trunk channels in use)")
TOO_FAST = Refusal("rate", 503, "Service Unavailable (trunk call rate)", RETRY_AFTER_S)
USER_CALLS = Refusal("user-calls", 403, "Forbidden (dial-out limit: calls at once per user)")
USER_HOUR = Refusal(
    "user-hour", 503, "Service Unavailable (dial-out limit: calls an hour per user)"
)
UNAVAILABLE = Refusal(
    "unavailable", 503, "Service Unavailable (call limits unreachable: cluster store down)",
    RETRY_AFTER_S,
)  # fmt: skip
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class UserLimit:
    """A user's share of a trunk when dialling out (None: no such limit)."""

    handle: str
    max_calls: int | None
    per_hour: int | None


class LimitsUnavailable(Exception):
    """The shared limits' store cannot be reached: no one can say a new call is within them."""


class SharedLimits(Protocol):
    """Limits shared by every node of a cluster (runtime/cluster_limits.py)."""

    async def take(
        self,
        lease: str,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        user: UserLimit | None,
        emergency: bool,
    ) -> Refusal | None:
        """Admit a call (holding a channel, and a share of `user`'s, under `lease` until
        `release`) or say which limit refuses it; LimitsUnavailable when it cannot tell. An
        emergency call takes a channel and is never refused."""
        ...

    def release(self, lease: str) -> None:
        """Give back what `lease` holds (in the background: it expires anyway)."""
        ...


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
        if self.refusal.limit.startswith("user-"):
            return "denied", "dial-out-limit"
        if self.refusal.limit == "unavailable":
            return "failed", "setup-failed"
        return (
            ("busy", "trunk-busy")
            if self.refusal.limit == "calls"
            else ("failed", "trunk-rate-limited")
        )


class TrunkLimits:
    def __init__(self, clock: Clock, shared: SharedLimits | None = None) -> None:
        self._clock = clock
        self.shared = shared  # several nodes: the cluster's limits decide (`admit`)
        self.active: Counter[str] = Counter()  # trunk -> calls now
        self.attempts: Counter[tuple[str, str]] = Counter()  # (trunk, direction) -> attempts
        self.refused: Counter[tuple[str, str]] = Counter()  # (trunk, limit) -> refusals
        self._buckets: dict[str, TokenBucket] = {}
        self._refusing: set[str] = set()  # trunks in a run of refusals
        self.user_active: Counter[tuple[str, str]] = Counter()  # (trunk, user) -> calls now
        self._user_calls: dict[tuple[str, str], deque[float]] = {}  # their calls' start times
        self._users_refusing: set[tuple[str, str]] = set()

    async def admit(
        self,
        lease: str,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        direction: str,
        emergency: bool = False,
        user: UserLimit | None = None,
    ) -> Refusal | None:
        """`acquire`, by the cluster's shared limits when there are some (the call holds them
        under `lease`, unique to the call, until `release`), else by this node's own."""
        unlimited = (
            max_calls is None
            and max_cps is None
            and (user is None or (user.max_calls is None and user.per_hour is None))
        )
        if self.shared is None or unlimited:  # nothing for the cluster to decide
            return self.acquire(trunk, max_calls, max_cps, direction, emergency, user)
        self.attempts[(trunk, direction)] += 1
        share = None if emergency else user
        try:
            refusal = await self.shared.take(lease, trunk, max_calls, max_cps, share, emergency)
        except LimitsUnavailable as exc:
            if emergency:  # never refused: counted on this node alone while the store is down
                log.error("sip: emergency call on %s put through unshared: %s", trunk, exc)
                refusal = None
            else:  # logged once a run of refusals, by the edge (`first_of_run`)
                log.debug("sip: call on trunk %s refused: %s", trunk, exc)
                refusal = UNAVAILABLE
        if refusal is None:
            self._admitted(trunk, share, track_hour=False)
            return None
        self.refused[(trunk, refusal.limit)] += 1
        return refusal

    def acquire(
        self,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        direction: str,
        emergency: bool = False,
        user: UserLimit | None = None,
    ) -> Refusal | None:
        """Take a channel of `trunk` for a new call, or say which limit refuses it. A call
        that got one gives it back with `release`. An emergency call is counted, never refused:
        a flood of other calls must not keep 112 from getting through. `user`: the dialling
        user's limits, checked first."""
        self.attempts[(trunk, direction)] += 1
        refusal: Refusal | None = None
        if not emergency:
            refusal = self._user_refusal(trunk, user) if user is not None else None
            refusal = refusal or self._trunk_refusal(trunk, max_calls, max_cps)
        if refusal is None:
            # an emergency call is not the user's share
            self._admitted(trunk, None if emergency else user, track_hour=True)
            return None
        self.refused[(trunk, refusal.limit)] += 1
        return refusal

    def _admitted(self, trunk: str, user: UserLimit | None, track_hour: bool) -> None:
        """Count an admitted call on this node (and the hour's calls, when this node decides)."""
        self.active[trunk] += 1
        self._refusing.discard(trunk)
        if user is None:
            return
        key = (trunk, user.handle)
        self.user_active[key] += 1
        if track_hour and user.per_hour is not None:  # at most per_hour kept: all it needs
            calls = self._user_calls.setdefault(key, deque(maxlen=user.per_hour))
            calls.append(self._clock.monotonic())
        self._users_refusing.discard(key)

    def _trunk_refusal(
        self, trunk: str, max_calls: int | None, max_cps: float | None
    ) -> Refusal | None:
        if max_calls is not None and self.active[trunk] >= max_calls:
            return FULL
        if max_cps is not None:
            now = self._clock.monotonic()
            bucket = self._buckets.get(trunk)
            if bucket is None:
                # a rate under 1/s still lets one through
                bucket = self._buckets[trunk] = TokenBucket(max_cps, max(1.0, max_cps), now)
            if not bucket.take(now):
                return TOO_FAST
        return None

    def _user_refusal(self, trunk: str, user: UserLimit) -> Refusal | None:
        key = (trunk, user.handle)
        if user.max_calls is not None and self.user_active[key] >= user.max_calls:
            return USER_CALLS
        started = self._user_calls.get(key)
        if started is None:
            return None
        now = self._clock.monotonic()
        while started and started[0] <= now - HOUR:
            started.popleft()
        if not started:
            del self._user_calls[key]
        elif user.per_hour is not None and len(started) >= user.per_hour:
            wait = started[len(started) - user.per_hour] + HOUR - now
            return replace(USER_HOUR, retry_after=max(1, math.ceil(wait)))
        return None

    def first_of_user_run(self, trunk: str, handle: str) -> bool:
        """Is this the user's first refusal since they last got a call through?"""
        if (trunk, handle) in self._users_refusing:
            return False
        self._users_refusing.add((trunk, handle))
        log.warning("sip: %s is refused dialling out through %s at the per-user limit", handle,
                    trunk)  # fmt: skip
        return True

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

    def release(self, trunk: str, user: str | None = None, lease: str | None = None) -> None:
        if lease is not None and self.shared is not None:
            self.shared.release(lease)
        if self.active[trunk] > 0:
            self.active[trunk] -= 1
        if user is not None and self.user_active[(trunk, user)] > 0:
            self.user_active[(trunk, user)] -= 1
            if not self.user_active[(trunk, user)]:
                del self.user_active[(trunk, user)]
