"""Separate relays in Redis (docs/scaling.md, "Separate relays").

Keys (under `callgate:`, beside runtime/redis_bus.py's):

- `relay:{id}` — JSON of a `callgate turn` process (signaling/relay_choice.py's RelayInfo),
  rewritten every `interval` seconds with a time to live of `ttl`: a relay that stops beating
  expires and is no longer handed out.
- `relays` — set of relay ids that ever registered (their keys say which live).
- `relay-drain:{id}` — set by `callgate turn --drain` or `POST /api/relays/{id}/drain`: the
  relay refuses new allocations (508) from its next beat, and exits once it holds none.

The relay also reads the nodes' snapshots (`snap:{node}`) at each beat: call-bound relaying
admits two users only while some node lists a live call between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callgate.signaling.relay_choice import MAX_RELAYS, RelayInfo

log = logging.getLogger(__name__)

PREFIX = "callgate:"
INTERVAL = 1.0
STOP_WITHIN = 2.0  # seconds for the goodbye (keys deleted, connection closed)
TTL = 5
# seconds a call's two users stay admitted after the last node listed it: a call whose node died
# goes on relaying until a surviving node takes it over (the lease, docs/scaling.md)
GRACE = 30.0
DRAIN_TTL = 86_400  # a drain request outlives any drain; a relay restarted under its id re-reads it
_DOWN = (RedisError, OSError)


def relay_key(relay_id: str) -> str:
    return f"{PREFIX}relay:{relay_id}"


def drain_key(relay_id: str) -> str:
    return f"{PREFIX}relay-drain:{relay_id}"


def connect(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


async def read_relays(redis: Redis) -> list[RelayInfo]:
    """Every relay whose registration is alive (malformed ones left out); ids whose
    registration expired leave the `relays` set (a relay beating again adds itself back)."""
    members = sorted(
        m.decode() if isinstance(m, bytes) else str(m)
        for m in await redis.smembers(f"{PREFIX}relays")
    )
    if not members:
        return []
    raw = await redis.mget([relay_key(m) for m in members])
    expired = [member for member, value in zip(members, raw, strict=True) if not value]
    if expired:
        await redis.srem(f"{PREFIX}relays", *expired)
    found = [_parsed(r) for r in raw if r][:MAX_RELAYS]
    return [info for info in found if info is not None]


def _parsed(raw: bytes | str) -> RelayInfo | None:
    try:
        return RelayInfo.from_json(json.loads(raw))
    except ValueError:  # not JSON: left out like any malformed registration
        return None


async def request_drain(redis: Redis, relay_id: str) -> RelayInfo | None:
    """Ask relay `relay_id` to drain; its registration (None: no such live relay, nothing set)."""
    relays = {info.relay_id: info for info in await read_relays(redis)}
    info = relays.get(relay_id)
    if info is not None:
        await redis.set(drain_key(relay_id), "1", ex=DRAIN_TTL)
    return info


class RelayPresence:
    """A `callgate turn` in a cluster: its heartbeat, its drain switch, and the live calls of
    every node for call-bound relaying."""

    def __init__(
        self,
        url: str,
        info: RelayInfo,
        load: Callable[[], int],
        on_drain: Callable[[], None],
        *,
        interval: float = INTERVAL,
        ttl: int = TTL,
    ) -> None:
        self._redis = connect(url)
        self._info = info
        self._load = load
        self._on_drain = on_drain
        self._interval = interval
        self._ttl = ttl
        self._pairs: dict[frozenset[str], float] = {}  # users of a live call -> last seen
        self._task: asyncio.Task[None] | None = None
        self.draining = False
        self.reachable = False

    def together(self, user_a: str, user_b: str) -> bool:
        """Call-bound relaying: a live call between these users on some node (a beat old)."""
        return frozenset((user_a, user_b)) in self._pairs

    async def start(self) -> None:
        try:
            await self._beat()
        except _DOWN as exc:
            log.warning("Redis unreachable at start (%s): not registered until it answers", exc)
        self._task = asyncio.create_task(self._run(), name="relay-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_WITHIN)
        # Best effort and bounded: the keys expire by themselves (ttl), and a connection whose
        # command the cancel above interrupted can leave redis-py waiting for ever (a drained
        # relay that logged "exiting" then never exited).
        with contextlib.suppress(TimeoutError, *_DOWN):
            async with asyncio.timeout(STOP_WITHIN):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.delete(relay_key(self._info.relay_id))
                    pipe.delete(drain_key(self._info.relay_id))
                    await pipe.execute()
        with contextlib.suppress(TimeoutError, *_DOWN):
            async with asyncio.timeout(STOP_WITHIN):
                await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._beat()
            except _DOWN as exc:
                if self.reachable:
                    log.warning("Redis unreachable: %s (registration expires)", exc)
                self.reachable = False
            except Exception:  # a bug must not stop the heartbeat for good
                log.exception("relay heartbeat failed")

    async def _beat(self) -> None:
        relay_id = self._info.relay_id
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(drain_key(relay_id))
            pipe.smembers(f"{PREFIX}nodes")
            drain, nodes = await pipe.execute()
        if drain and not self.draining:
            self.draining = True
            log.warning("relay %s draining: new allocations refused", relay_id)
            self._on_drain()
        info = replace(self._info, load=self._load(), draining=self.draining)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(relay_key(relay_id), json.dumps(info.as_json()), ex=self._ttl)
            pipe.sadd(f"{PREFIX}relays", relay_id)
            await pipe.execute()
        names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in nodes)
        snapshots = await self._redis.mget([f"{PREFIX}snap:{n}" for n in names]) if names else []
        now = time.monotonic()
        for raw in snapshots:
            if not raw:
                continue
            try:
                snapshot = json.loads(raw)
                calls, pairs = list(snapshot.get("calls", [])), list(snapshot.get("pairs", []))
            except (ValueError, AttributeError, TypeError):
                continue  # a malformed snapshot admits nobody
            for call in calls:
                if not isinstance(call, dict):
                    continue
                pair = frozenset((str(call.get("caller")), str(call.get("callee"))))
                self._pairs[pair] = now
            for users in pairs:
                if isinstance(users, list) and len(users) == 2:
                    self._pairs[frozenset(map(str, users))] = now
        for pair, seen in list(self._pairs.items()):
            if now - seen > GRACE:
                del self._pairs[pair]
        if not self.reachable:
            log.info("relay %s registered in region %s", relay_id, self._info.region)
        self.reachable = True
