"""Relay registrations in a real Redis (runtime/relay_registry.py): heartbeat, expiry, drain
switch, and the call pairs a registered relay admits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from callgate.runtime.relay_registry import (
    RelayPresence,
    connect,
    read_relays,
    relay_key,
    request_drain,
)
from callgate.signaling.relay_choice import RelayInfo
from tests.redis_server import RedisServer

INFO = RelayInfo(
    relay_id="eu1",
    region="eu",
    udp=(("127.0.0.1", 3478),),
    tls=(),
    relay_ips=frozenset({"127.0.0.1"}),
    ports=(50000, 50099),
    load=0,
    draining=False,
)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll `check` until it holds (generous: a loaded machine runs late; nothing here is timed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


async def test_register_drain_expire_and_admit(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    drained: list[bool] = []
    # a 3 s TTL beats every 0.1 s: a loaded machine's late heartbeat does not expire it early
    presence = RelayPresence(redis_server.url, INFO, lambda: 3, lambda: drained.append(True),
                             interval=0.1, ttl=3)  # fmt: skip
    try:
        # a node's snapshot: one call it holds, one it takes part in, and garbage beside them
        snapshot = {"calls": [{"caller": "alice", "callee": "bob"}], "pairs": [["carol", "dave"]]}
        await redis.sadd("callgate:nodes", "a", "b")
        await redis.set("callgate:snap:a", json.dumps(snapshot))
        await redis.set("callgate:snap:b", "not json")
        await presence.start()
        (info,) = await read_relays(redis)
        assert (info.relay_id, info.region, info.load, info.draining) == ("eu1", "eu", 3, False)
        assert presence.together("bob", "alice") and presence.together("carol", "dave")
        assert not presence.together("alice", "carol")

        # drain: asked once, the relay says so in its registration
        assert await request_drain(redis, "nobody") is None
        assert await request_drain(redis, "eu1") is not None

        async def drain_called() -> bool:
            return bool(drained)

        await until(drain_called, "the drain callback")
        assert drained == [True] and presence.draining

        async def draining_published() -> bool:
            (info,) = await read_relays(redis)
            return info.draining

        await until(draining_published, "the registration to say draining")

        # a malformed registration is left out; a relay that stops beating expires
        await redis.set(relay_key("bad"), "{")
        await redis.sadd("callgate:relays", "bad")
        assert [r.relay_id for r in await read_relays(redis)] == ["eu1"]
        assert presence._task is not None
        presence._task.cancel()  # the heartbeat stops; the key is not removed

        async def expired() -> bool:
            return await read_relays(redis) == []

        await until(expired, "the registration to expire (TTL 3 s)")
        assert await redis.smembers("callgate:relays") == {b"bad"}  # expired ids leave the set
    finally:
        await presence.stop()
        await redis.aclose()
