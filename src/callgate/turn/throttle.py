"""Throttling failed TURN authentications, per source address and per username.

Every key (an address, a username) has a token bucket of `burst` failures refilled at `rate` per
second. A failure that finds the bucket empty blocks the key for `base_block` seconds, doubled on
each further block (up to `max_block`); a key quiet for `forget_after` seconds starts over. While a
key is blocked its requests are refused without looking at their credentials, so guessing a
password through Allocate is held to about `burst` tries per `max_block` seconds.

One `Burst` summary is returned when a block starts (never one per packet): it counts the failures
that led to it and the requests refused during the previous block. `FailureThrottle` is pure logic
(the caller passes the time); `AuthThrottle` pairs the two scopes and reports each block.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from callgate.clock import Clock
from callgate.types.events import AuthEventSink, AuthThrottled

log = logging.getLogger(__name__)

DEFAULT_BURST = 10
DEFAULT_RATE = 0.2  # failures forgiven per second (one every 5 s)
DEFAULT_BASE_BLOCK = 30.0
DEFAULT_MAX_BLOCK = 900.0
DEFAULT_MAX_KEYS = 100_000  # bounded state: spraying many addresses or names evicts the oldest


@dataclass(frozen=True, slots=True)
class Burst:
    """A block just started for `key` (scope "address" or "username")."""

    scope: str
    key: str
    failures: int  # failures since the key was last quiet, including this one
    refused: int  # requests refused while it was blocked before (0 on the first block)
    blocked_s: float  # how long this block lasts
    strike: int  # 1 for the first block, 2 for the next, ...


@dataclass(slots=True)
class _State:
    tokens: float
    updated: float
    blocked_until: float = 0.0
    strikes: int = 0
    failures: int = 0
    refused: int = 0


class FailureThrottle:
    """Token buckets with growing blocks, one per key, for one scope."""

    def __init__(
        self,
        scope: str,
        *,
        burst: int = DEFAULT_BURST,
        rate: float = DEFAULT_RATE,
        base_block: float = DEFAULT_BASE_BLOCK,
        max_block: float = DEFAULT_MAX_BLOCK,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.scope = scope
        self.burst = burst
        self.rate = rate
        self.base_block = base_block
        self.max_block = max_block
        self.forget_after = max_block * 2
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _State] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def blocked(self, key: str, now: float) -> float:
        """Seconds `key` stays blocked (0.0 when it may try); a refusal is counted."""
        state = self._keys.get(key)
        if state is None or state.blocked_until <= now:
            return 0.0
        state.refused += 1
        return state.blocked_until - now

    def failure(self, key: str, now: float) -> Burst | None:
        """Count a failed authentication of `key`; the summary when it starts a block."""
        state = self._state(key, now)
        state.failures += 1
        state.tokens = min(self.burst, state.tokens + (now - state.updated) * self.rate)
        state.updated = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return None
        state.strikes += 1
        block = min(self.max_block, self.base_block * 2 ** (state.strikes - 1))
        state.blocked_until = now + block
        burst = Burst(self.scope, key, state.failures, state.refused, block, state.strikes)
        state.refused = 0
        return burst

    def sweep(self, now: float) -> None:
        """Forget keys quiet for `forget_after` seconds (oldest first)."""
        while self._keys:
            key, state = next(iter(self._keys.items()))
            if max(state.updated, state.blocked_until) + self.forget_after > now:
                break
            del self._keys[key]

    def _state(self, key: str, now: float) -> _State:
        state = self._keys.get(key)
        if state is not None and max(state.updated, state.blocked_until) + self.forget_after <= now:
            state = None  # quiet long enough: a fresh start
        if state is None:
            state = _State(tokens=float(self.burst), updated=now)
            if len(self._keys) >= self.max_keys:
                self._keys.popitem(last=False)
        self._keys[key] = state
        self._keys.move_to_end(key)
        return state


class AuthThrottle:
    """The relay's two throttles (source address, username) and where their blocks are reported:
    a warning in the log and, when set, `events` (the audit log, with `serve`)."""

    def __init__(self, clock: Clock, events: AuthEventSink | None = None) -> None:
        self.clock = clock
        self.events = events
        self.addresses = FailureThrottle("address")
        self.usernames = FailureThrottle("username")

    def blocked(self, address: str, username: str) -> float:
        """Seconds before a request from `address` for `username` may be checked again."""
        now = self.clock.monotonic()
        return max(self.addresses.blocked(address, now), self.usernames.blocked(username, now))

    def failed(self, address: str, username: str) -> None:
        now = self.clock.monotonic()
        for burst in (self.addresses.failure(address, now), self.usernames.failure(username, now)):
            if burst is not None:
                self._report(burst, address, username)

    def sweep(self) -> None:
        now = self.clock.monotonic()
        self.addresses.sweep(now)
        self.usernames.sweep(now)

    def _report(self, burst: Burst, address: str, username: str) -> None:
        log.warning(
            "TURN authentication throttled: %s %r blocked %.0f s after %d failures (strike %d)",
            burst.scope,
            burst.key,
            burst.blocked_s,
            burst.failures,
            burst.strike,
        )
        if self.events is not None:
            self.events.auth_throttled(
                AuthThrottled(
                    burst.scope,
                    burst.key,
                    burst.failures,
                    burst.refused,
                    burst.blocked_s,
                    burst.strike,
                    self.clock.wall(),
                    address,
                    username,
                )
            )
