"""Sign-in throttling: growing delays per account and per client address (issue 12 item 2).

Every attempt is charged *before* its password is checked (so a burst of parallel requests cannot
slip in between a check and its failure); a successful sign-in gives the charge back and clears the
account's count. After `free` failures on one key, the next attempt must wait
`base_s * 2**(failures - free)` seconds after the last one, capped at `max_delay_s`. A key with no
failure for `forget_s` is forgotten. Unknown handles are throttled exactly like existing ones, so
the answer (429 and its Retry-After) says nothing about which accounts exist.

State is in memory, per process: `callgate serve` is one process; several API processes behind a
load balancer each keep their own counts (docs/security.md). Memory is bounded: at most
`max_keys` keys, the stalest dropped first.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from callgate.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    free: int  # failures allowed without delay
    base_s: float = 1.0
    max_delay_s: float = 300.0
    forget_s: float = 3600.0


ACCOUNT_RULE = ThrottleRule(free=5)
ADDRESS_RULE = ThrottleRule(free=20)


def login_throttle(
    account_failures: int, address_failures: int, delay_s: float, max_delay_s: float
) -> LoginThrottle:
    """The throttle `[limits]` describes (config.LimitSettings)."""
    forget = max(3600.0, 2 * max_delay_s)
    return LoginThrottle(
        account=ThrottleRule(account_failures, delay_s, max_delay_s, forget),
        address=ThrottleRule(address_failures, delay_s, max_delay_s, forget),
    )


@dataclass(slots=True)
class _Count:
    failures: int
    last: float  # monotonic time of the last charged attempt


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_s: int  # whole seconds, at least 1
    key: str  # "account" or "address": which limit was hit
    first: bool  # the first refusal since the last charged attempt (audit it once)


class LoginThrottle:
    """Thread-safe (the API's sign-in route runs in the thread pool)."""

    def __init__(
        self,
        clock: Clock | None = None,
        account: ThrottleRule = ACCOUNT_RULE,
        address: ThrottleRule = ADDRESS_RULE,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock or SystemClock()
        self._rules = {"account": account, "address": address}
        self._counts: dict[tuple[str, str], _Count] = {}
        self._refused: set[tuple[str, str]] = set()
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def admit(self, handle: str, address: str | None, account: bool = True) -> Refusal | None:
        """None: go ahead (the attempt is charged as a failure until `succeeded`); else how
        long to wait. A refused attempt is not charged. `account=False` checks and charges
        only the address (a request whose account lockout would help an attacker)."""
        now = self._clock.monotonic()
        # by kind, not by position: the exemption must not hang on the order of `_keys`
        keys = [k for k in self._keys(handle, address) if account or k[0] != "account"]
        with self._lock:
            for key in keys:
                wait = self._wait(key, now)
                if wait > 0:
                    first = key not in self._refused
                    self._refused.add(key)
                    return Refusal(max(1, math.ceil(wait)), key[0], first)
            for key in keys:
                self._charge(key, now)
        return None

    def succeeded(self, handle: str, address: str | None) -> None:
        """The admitted attempt signed in: the account's count is cleared, the address's
        charge given back."""
        with self._lock:
            self._counts.pop(("account", handle), None)
            self._refused.discard(("account", handle))
            if address is not None:
                count = self._counts.get(("address", address))
                if count is not None:
                    count.failures = max(0, count.failures - 1)

    def _keys(self, handle: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("account", handle)]
        if address is not None:
            keys.append(("address", address))
        return keys

    def _wait(self, key: tuple[str, str], now: float) -> float:
        count = self._counts.get(key)
        if count is None:
            return 0.0
        rule = self._rules[key[0]]
        if now - count.last >= rule.forget_s:
            del self._counts[key]
            self._refused.discard(key)
            return 0.0
        over = count.failures - rule.free
        if over < 0:
            return 0.0
        delay = min(rule.max_delay_s, rule.base_s * 2.0 ** min(over, 62))
        return count.last + delay - now

    def _charge(self, key: tuple[str, str], now: float) -> None:
        count = self._counts.pop(key, None)  # re-inserted last: dict order is staleness order
        if count is None:
            count = _Count(0, now)
            if len(self._counts) >= self._max_keys:
                stalest = next(iter(self._counts))
                del self._counts[stalest]
                self._refused.discard(stalest)
        count.failures += 1
        count.last = now
        self._counts[key] = count
        self._refused.discard(key)
