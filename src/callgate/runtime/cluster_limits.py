"""Trunk and dial-out limits shared by every signaling node, on Redis (docs/sip.md, "Trunk
limits"; docs/scaling.md, "Limits across nodes").

One Lua script decides each admission (Redis runs a script alone: two nodes racing for a trunk's
last channel cannot both get it) and, admitted, takes everything at once. Keys (under
`callgate:limit:`, each named by a JSON list so no trunk or user name can pose as another's):

- `calls:["trunk"]` — sorted set: the trunk's calls now, each a member "node lease" scored by the
  time its lease expires. The owning node pushes its calls' expiry `LEASE_S` ahead every
  `REFRESH_S`; a node that dies stops doing so, and its calls leave the count `LEASE_S` after its
  last refresh (removed by the next admission's `ZREMRANGEBYSCORE`). One set and one script count
  and prune: per-call keys with a TTL would need a SCAN of the keyspace to count, neither atomic
  nor bounded.
- `user-calls:["trunk","handle"]` — the same, for a user's calls at once through the trunk.
- `user-hour:["trunk","handle"]` — sorted set of the user's admitted calls scored by their start:
  those of the last hour count (`max_calls_per_user_hour`), older ones are pruned.
- `rate:["trunk"]` — hash: the trunk's attempts-a-second token bucket (tokens, time).

Times are Redis's own (`TIME`), not the nodes': their clocks may differ, and a lease must
expire at the same moment for all. Tests give a `Clock` instead.

Redis unreachable: `take` raises LimitsUnavailable (the edge refuses the call, except an
emergency one); refreshes and releases are retried by the next refresh, and a lease they
could not reach expires on its own. After Redis lost its data (a restart), each node's next
refresh puts its live calls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callgate.clock import Clock
from callgate.sip.trunk_limits import (
    FULL,
    TOO_FAST,
    USER_CALLS,
    USER_HOUR,
    LimitsUnavailable,
    Refusal,
    UserLimit,
)

log = logging.getLogger(__name__)

PREFIX = "callgate:limit:"
LEASE_S = 15.0  # a dead node's calls hold their channels this long after its last refresh
REFRESH_S = 5.0  # the owning node pushes its leases' expiry ahead this often
WAIT_S = 2.0  # an admission waits this long for Redis at most
_DOWN = (RedisError, OSError, TimeoutError)

# ARGV[1]: the time to decide at, or "" for Redis's own clock (TIME) (both scripts begin so)
_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: trunk calls, trunk rate, user calls, user hour. ARGV: now ("" = Redis's TIME), lease s,
# member, max calls, max cps, user max calls, user calls an hour (-1: no limit), emergency, user.
_TAKE = (
    _NOW
    + """
local lease, member = tonumber(ARGV[2]), ARGV[3]
local max_calls, max_cps = tonumber(ARGV[4]), tonumber(ARGV[5])
local user_max, user_hour = tonumber(ARGV[6]), tonumber(ARGV[7])
local emergency, has_user = ARGV[8] == '1', ARGV[9] == '1'
local keep_ms = math.ceil(lease * 2000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if has_user then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 3600)
end
if not emergency then
  if has_user and user_max >= 0 and redis.call('ZCARD', KEYS[3]) >= user_max then
    return {'user-calls', '0'}
  end
  if has_user and user_hour >= 0 then
    local n = redis.call('ZCARD', KEYS[4])
    if n >= user_hour then
      local oldest = redis.call('ZRANGE', KEYS[4], n - user_hour, n - user_hour, 'WITHSCORES')
      return {'user-hour', tostring(tonumber(oldest[2]) + 3600 - now)}
    end
  end
  if max_calls >= 0 and redis.call('ZCARD', KEYS[1]) >= max_calls then
    return {'calls', '0'}
  end
  if max_cps >= 0 then
    local cap = math.max(1, max_cps)
    local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
    local tokens, at = tonumber(state[1]) or cap, tonumber(state[2]) or now
    tokens = math.min(cap, tokens + math.max(0, now - at) * max_cps)
    if tokens < 1 then
      return {'rate', '0'}
    end
    redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[2], math.ceil(cap / max_cps * 1000) + 1000)
  end
end
redis.call('ZADD', KEYS[1], tostring(now + lease), member)
redis.call('PEXPIRE', KEYS[1], keep_ms)
if has_user and not emergency then
  redis.call('ZADD', KEYS[3], tostring(now + lease), member)
  redis.call('PEXPIRE', KEYS[3], keep_ms)
  if user_hour >= 0 then
    redis.call('ZADD', KEYS[4], tostring(now), member)
    redis.call('EXPIRE', KEYS[4], 3601)
  end
end
return {'ok', '0'}
"""
)

# KEYS: the sets holding this node's leases, ARGV: now, lease s, then one member per key.
_REFRESH = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, tostring(now + lease), ARGV[i + 2])
  redis.call('PEXPIRE', key, math.ceil(lease * 2000))
end
return #KEYS
"""
)

_REFUSALS = {"user-calls": USER_CALLS, "calls": FULL, "rate": TOO_FAST}


def key(kind: str, *names: str) -> str:
    return PREFIX + kind + ":" + json.dumps(list(names))


def _limit(value: float | None) -> str:
    return "-1" if value is None else repr(float(value))


def refusal(answer: list[Any]) -> Refusal | None:
    """The script's answer as the edge's refusal (None: admitted)."""
    name, wait = (v.decode() if isinstance(v, bytes) else str(v) for v in answer)
    if name == "ok":
        return None
    if name == "user-hour":  # RFC 3261 §20.33: the seconds until a call leaves the hour
        return replace(USER_HOUR, retry_after=max(1, math.ceil(float(wait))))
    return _REFUSALS[name]


class ClusterLimits:
    """`SharedLimits` (sip/trunk_limits.py) on the node's Redis client."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        *,
        clock: Clock | None = None,
        lease_s: float = LEASE_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._redis = redis
        self._node = node_id
        self._clock = clock  # None: Redis's own time
        self._lease_s = lease_s
        self._refresh_s = refresh_s
        self._take = redis.register_script(_TAKE)
        self._refresh = redis.register_script(_REFRESH)
        self._held: dict[str, tuple[str, ...]] = {}  # member -> the sets it is in
        self._released: dict[str, tuple[str, ...]] = {}  # given back, not yet removed
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock.wall())

    def _member(self, lease: str) -> str:
        return f"{self._node} {lease}"

    async def take(
        self,
        lease: str,
        trunk: str,
        max_calls: int | None,
        max_cps: float | None,
        user: UserLimit | None,
        emergency: bool,
    ) -> Refusal | None:
        handle = user.handle if user is not None else ""
        keys = [
            key("calls", trunk),
            key("rate", trunk),
            key("user-calls", trunk, handle),
            key("user-hour", trunk, handle),
        ]
        member = self._member(lease)
        args = [
            self._now(), repr(self._lease_s), member, _limit(max_calls), _limit(max_cps),
            _limit(user.max_calls if user else None), _limit(user.per_hour if user else None),
            "1" if emergency else "0", "1" if user is not None else "0",
        ]  # fmt: skip
        try:
            async with asyncio.timeout(WAIT_S):
                answer = await self._take(keys=keys, args=args)
        except _DOWN as exc:
            raise LimitsUnavailable(f"Redis unreachable: {exc}") from None
        refused = refusal(answer)
        if refused is None:
            held = keys[:1] if user is None or emergency else (keys[0], keys[2])
            self._held[member] = tuple(held)
        return refused

    def release(self, lease: str) -> None:
        member = self._member(lease)
        sets = self._held.pop(member, None)
        if sets is not None:
            self._released[member] = sets
            self._wake.set()

    def holding(self) -> int:
        """Leases this node holds now (its calls through trunks)."""
        return len(self._held)

    # -- the node's beat ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-limits")

    async def stop(self) -> None:
        """Stop refreshing and give back every lease still held (a clean shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._released.update(self._held)
        self._held.clear()
        with contextlib.suppress(*_DOWN):
            async with asyncio.timeout(WAIT_S):
                await self._give_back()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_s):
                    await self._wake.wait()  # a release: remove it now
            self._wake.clear()
            try:
                await self.beat()
            except _DOWN as exc:
                log.warning("call limits: Redis unreachable, leases not refreshed: %s", exc)
            except Exception:  # the loop must go on: a lease not refreshed frees a live call's
                log.exception("call limits: refreshing the leases failed")

    async def beat(self) -> None:
        """Remove the leases given back; push the expiry of those held ahead (put them back if
        Redis lost them). A release during the refresh is removed again after it."""
        await self._give_back()
        held = dict(self._held)
        if held:
            keys = [k for sets in held.values() for k in sets]
            members = [m for m, sets in held.items() for _ in sets]
            args = [self._now(), repr(self._lease_s), *members]
            await self._refresh(keys=keys, args=args)
        if any(m in self._released for m in held):
            await self._give_back()

    async def _give_back(self) -> None:
        released = dict(self._released)
        if not released:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, sets in released.items():
                for name in sets:
                    pipe.zrem(name, member)
            await pipe.execute()
        for member in released:
            self._released.pop(member, None)
