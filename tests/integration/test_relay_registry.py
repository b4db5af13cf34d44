"""Relay registrations in a real Redis (runtime/relay_registry.py): heartbeat, expiry, drain
switch, and the call pairs a registered relay admits; entries not sealed with the cluster key
(runtime/cluster_seal.py) are ignored: a forged relay is never handed to clients, forged pairs
and snapshots admit nobody, a forged drain request drains nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from callgate.runtime.cluster_keys import ClusterKeys, parse_relay_key
from callgate.runtime.cluster_seal import MAX_ENTRY_BYTES, ClusterSeal
from callgate.runtime.node_envelope import NodeEnvelope
from callgate.runtime.redis_bus import RedisBus
from callgate.runtime.relay_registry import (
    PAIRS_CHANNEL,
    RelayPresence,
    connect,
    drain_key,
    read_relay,
    read_relays,
    relay_key,
    request_drain,
)
from callgate.signaling.cluster import RemoteDevice
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
KEY = b"integration-cluster-key-0123456789abcdef"
SEAL = ClusterSeal(KEY)
FORGER = ClusterSeal(b"someone-else-s-key-0123456789abcdef-xyz")
# relay eu1 holds only the key a node issued it (runtime/cluster_keys.py)
EU1 = ClusterSeal(ClusterKeys.for_relay(*parse_relay_key(SEAL.keys.relay_key_line("eu1"))))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def published_until(redis: Redis, message: str, done: Callable[[], bool], what: str) -> None:
    """Publish `message` on `pairs` (again, while the relay may not have subscribed yet) until
    `done()`."""

    async def check() -> bool:
        await redis.publish(PAIRS_CHANNEL, message)
        return done()

    await eventually(check, what)


def pair(users: list[str], live: bool = True, seal: ClusterSeal = SEAL) -> str:
    return seal.seal("pair", "", {"node": "a", "pair": users, "live": live})


async def test_register_drain_expire_and_admit(acl_redis_server: RedisServer) -> None:
    """...as relay eu1's Redis user of the shipped deploy/redis-users.acl (Redis started on the
    file itself), which cannot publish a message to a node, write a snapshot, another relay's
    registration or any shared key; a client that does not log in can do nothing."""
    redis_server = acl_redis_server
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(64).startswith(b"-NOAUTH")
    redis = connect(redis_server.url)
    relay_url = redis_server.user_url("callgate-relay-eu1")
    drained: list[bool] = []
    presence = RelayPresence(relay_url, INFO, lambda: 3, lambda: drained.append(True),
                             EU1, interval=0.1, ttl=3)  # fmt: skip
    try:
        relay_user = connect(relay_url)
        for denied in [relay_user.publish("callgate:node:a", "{}"),
                       relay_user.set("callgate:snap:a", "{}"),
                       relay_user.set("callgate:relay:us1", "{}"),
                       relay_user.set("callgate:relays", "junk"),
                       relay_user.sadd("callgate:relays", "junk"),
                       relay_user.delete("callgate:relay-drain:us1")]:  # fmt: skip
            with pytest.raises(NoPermissionError):
                await denied
        await relay_user.aclose()
        # a node's snapshot (one call it holds, one it takes part in), a forged one, garbage
        snapshot = {"calls": [{"caller": "alice", "callee": "bob"}], "pairs": [["carol", "dave"]]}
        forged = {"calls": [{"caller": "mallory", "callee": "bob"}], "pairs": [["eve", "bob"]]}
        await redis.sadd("callgate:nodes", "a", "b", "c")
        await redis.set("callgate:snap:a", SEAL.seal("snap", "a", snapshot))
        await redis.set("callgate:snap:b", FORGER.seal("snap", "b", forged))
        await redis.set("callgate:snap:c", json.dumps(forged))  # unsigned
        await presence.start()
        # once registered, a relay hears the pairs nodes announce (it subscribed first): one
        # announcement, published the moment start() returns, is not lost
        await redis.publish(PAIRS_CHANNEL, pair(["frank", "grace"]))
        (info,) = await read_relays(redis, SEAL)
        assert (info.relay_id, info.region, info.load, info.draining) == ("eu1", "eu", 3, False)
        assert presence.together("bob", "alice") and presence.together("carol", "dave")
        assert not presence.together("alice", "carol")
        assert not presence.together("mallory", "bob") and not presence.together("eve", "bob")

        # a call being placed: its node announces the pair at once; a refused invite withdraws
        # it; a forged announcement admits nobody (a signed one sent after it is heard)
        async def heard() -> bool:
            return presence.together("frank", "grace")

        await eventually(heard, "the pair announced as the relay registered")
        await published_until(redis, pair(["alice", "carol"]),
                              lambda: presence.together("alice", "carol"), "pair announced")  # fmt: skip
        await published_until(redis, pair(["alice", "carol"], live=False),
                              lambda: not presence.together("alice", "carol"), "pair withdrawn")  # fmt: skip
        await redis.publish(PAIRS_CHANNEL, pair(["mallory", "bob"], seal=FORGER))
        await redis.publish(PAIRS_CHANNEL, json.dumps({"node": "a", "pair": ["eve", "bob"]}))
        await published_until(redis, pair(["dave", "erin"]),
                              lambda: presence.together("dave", "erin"), "signed pair")  # fmt: skip
        assert not presence.together("mallory", "bob") and not presence.together("eve", "bob")

        # drain: a forged request is ignored, and so are signed ones for another life of the
        # relay (a previous boot's, or the old unbound form); one for this boot is obeyed
        for request in [FORGER.seal("drain", "eu1", {"boot": presence.boot}),
                        SEAL.seal("drain", "eu1", {"boot": "a-previous-life"}),
                        SEAL.seal("drain", "eu1", True)]:  # fmt: skip
            await redis.set(drain_key("eu1"), request)
            for _ in range(2):  # two beats: the second read the request
                await redis.delete(relay_key("eu1"))
                await eventually(lambda: _registered(redis), "a beat after the request")
        assert not drained and not presence.draining
        assert await request_drain(redis, SEAL, "nobody") is None
        # the relay drains itself (deploy's ExecStop: `callgate turn --drain` with its own key
        # and Redis user)
        relay_user = connect(relay_url)
        try:
            assert await request_drain(relay_user, EU1, "eu1") is not None
        finally:
            await relay_user.aclose()

        async def draining() -> bool:
            relays = await read_relays(redis, SEAL)
            return bool(drained) and len(relays) == 1 and relays[0].draining

        await eventually(draining, "the relay draining")
        assert drained == [True] and presence.draining
        replayed = await redis.get(drain_key("eu1"))

        # a relay that stops beating expires
        presence._stopping = True  # the heartbeat stops; the key is not removed

        async def expired() -> bool:
            return await read_relays(redis, SEAL) == []

        await eventually(expired, "the silent relay expired")

        # the relay restarted under the same id: the request it obeyed, replayed, drains nothing
        await presence.stop()
        presence = RelayPresence(relay_url, INFO, lambda: 0, lambda: drained.append(True),
                                 EU1, interval=0.1, ttl=3)  # fmt: skip
        await redis.set(drain_key("eu1"), replayed)
        await presence.start()
        for _ in range(2):
            await redis.delete(relay_key("eu1"))
            await eventually(lambda: _registered(redis), "a beat after the replay")
        assert drained == [True] and not presence.draining
        assert [r.draining for r in await read_relays(redis, SEAL)] == [False]
    finally:
        await presence.stop()
        await redis.aclose()


async def _registered(redis: Redis) -> bool:
    return bool(await redis.exists(relay_key("eu1")))


async def test_only_sealed_registrations_are_offered_to_clients(
    redis_server: RedisServer,
) -> None:
    """What a node hands its clients (RedisBus.relays(), read at each beat): the genuine relay,
    not one registered under another key, unsigned, stale, moved to another id's key, larger
    than 64 KiB (not even fetched whole), under an id no node_id could be, or a key of another
    type; and none of them, nor junk where relays used to list themselves, stops the bus."""
    redis = connect(redis_server.url)
    genuine = RelayPresence(redis_server.url, INFO, lambda: 0, lambda: None, EU1)
    bus = RedisBus(redis_server.url, "n1", SEAL, interval=0.1, relay_scan_every=0.3)
    us1 = ClusterSeal(ClusterKeys.for_relay(*parse_relay_key(SEAL.keys.relay_key_line("us1"))))
    later = RelayPresence(redis_server.url, replace(INFO, relay_id="us1"), lambda: 0,
                          lambda: None, us1)  # fmt: skip
    try:
        await genuine.start()

        def evil(relay_id: str) -> dict[str, Any]:
            return replace(INFO, relay_id=relay_id, udp=(("127.0.0.1", 9),)).as_json()

        stale = ClusterSeal(KEY, wall=lambda: 0.0)  # written long ago
        entries = {
            "forged": FORGER.seal("relay", "forged", evil("forged")),
            "plain": json.dumps(evil("plain")),
            "stale": stale.seal("relay", "stale", evil("stale")),
            "moved": SEAL.seal("relay", "eu1", evil("moved")),  # eu1's entry under another id
        }
        big = {**evil("big"), "padding": "x" * MAX_ENTRY_BYTES}
        entries["big"] = SEAL.seal("relay", "big", big)  # genuine, but too large
        entries["bad id!"] = json.dumps(evil("bad id!"))
        for relay_id, raw in entries.items():
            await redis.set(relay_key(relay_id), raw, ex=60)
        await redis.hset(relay_key("hash"), "id", "hash")  # WRONGTYPE for GET/GETRANGE
        await redis.set("callgate:relays", "junk")  # no longer read: harmless
        await bus.start()

        async def genuine_only() -> bool:
            return bus.available and [r.relay_id for r in bus.relays()] == ["eu1"]

        await eventually(genuine_only, "the node sees the genuine relay")
        assert [r.relay_id for r in await read_relays(redis, SEAL)] == ["eu1"]
        # a relay registering later is found by the node's next scan, then read at each beat
        await later.start()

        async def both() -> bool:
            return [r.relay_id for r in bus.relays()] == ["eu1", "us1"]

        await eventually(both, "the node finds the relay registered later")
        assert await read_relay(redis, SEAL, "hash") is None
        assert await request_drain(redis, SEAL, "hash") is None
        refused = {why for (kind, why) in bus.seal.refusals if kind == "relay"}
        assert refused == {"forged", "unsigned", "stale", "oversized", "bad-id", "wrongtype"}
    finally:
        await bus.stop()
        await later.stop()
        await genuine.stop()
        await redis.aclose()


class Peer:
    """A node's hub, as far as the bus sees it: what other nodes sent it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        return {}

    def local_devices(self) -> list[RemoteDevice]:
        return []

    async def on_message(self, message: dict[str, Any]) -> None:
        self.received.append(message)


async def test_only_nodes_with_a_sealed_snapshot_are_rung(acl_redis_server: RedisServer) -> None:
    """A device whose node's snapshot is unsigned, forged or moved from another node's key is
    not rung (devices_of leaves it out), although the snapshot key exists; nor is a directory
    entry not sealed for that user and device; the genuine node's device is rung until its
    node's snapshot expires (the node died: its device stays in the directory). Messages
    between nodes reach the hub only when sealed with the node key for it, once: forged,
    unsigned and replayed ones are ignored and counted (runtime/node_envelope.py). Node n1 runs
    as the node user of the shipped deploy/redis-users.acl."""
    redis_server = acl_redis_server
    redis = connect(redis_server.url)
    bus = RedisBus(redis_server.user_url("callgate-node"), "n1", SEAL, interval=0.1)
    peer = Peer()
    bus.attach(peer)
    # beats once, at start: its snapshot then stays until it is deleted below (its expiry)
    genuine = RedisBus(redis_server.url, "good", SEAL, interval=3600, ttl=3600)
    snapshots = {
        "forged": FORGER.seal("snap", "forged", {}),
        "plain": json.dumps({}),
        "moved": SEAL.seal("snap", "good", {}),  # good's snapshot under another node's key
    }
    try:
        await genuine.start()
        for node, raw in snapshots.items():
            await redis.set(f"callgate:snap:{node}", raw, ex=60)
        for node in ["good", *snapshots]:
            device = RemoteDevice(f"phone-{node}", "bob", "Bob", False, node)
            writer = RedisBus(redis_server.url, node, SEAL)
            await writer._announce([device])
            await writer._redis.aclose()

        # directory entries on the genuine node that no node sealed for bob's device
        def on_good(device_id: str, handle: str = "bob") -> dict[str, Any]:
            return RemoteDevice(device_id, handle, "Bob", False, "good").as_json()

        alice = SEAL.seal("dev", json.dumps(["alice", "phone-a"]), on_good("phone-a", "alice"))
        forged_entries = {
            "plain": json.dumps(on_good("plain")),
            "forged": FORGER.seal("dev", json.dumps(["bob", "forged"]), on_good("forged")),
            "phone-a": alice,  # alice's genuine entry moved into bob's directory
        }
        await redis.hset("callgate:dev:bob", mapping=forged_entries)
        await bus.start()

        async def available() -> bool:
            return bus.available

        await eventually(available, "the bus subscribed")
        await _only_sealed_messages_reach_the_hub(redis, genuine, bus, peer)
        assert len(await redis.hgetall("callgate:dev:bob")) == 4 + len(forged_entries)
        assert [d.device_id for d in await bus.devices_of("bob")] == ["phone-good"]

        await redis.delete("callgate:snap:good")  # as when a dead node's snapshot expires

        async def not_rung() -> bool:
            return await bus.devices_of("bob") == []

        await eventually(not_rung, "the dead node's device no longer rung")
        assert await redis.hexists("callgate:dev:bob", "phone-good")  # still listed
    finally:
        await bus.stop()
        await genuine.stop()
        await redis.aclose()


async def _only_sealed_messages_reach_the_hub(
    redis: Redis, genuine: RedisBus, bus: RedisBus, peer: Peer
) -> None:
    """An administrator's end-call forged, signed with a relay's key, unsigned, replayed or
    meant for another node is not acted on; the genuine one is, once."""
    end = {"op": "end", "call": "c1", "admin": "root"}
    channel = "callgate:node:n1"
    forger = NodeEnvelope(FORGER, "good")
    relay_key = SEAL.keys.relay_key("eu1")
    assert relay_key is not None
    relay = NodeEnvelope(ClusterSeal(ClusterKeys.for_node(relay_key)), "good")
    replayed = NodeEnvelope(SEAL, "good")
    once = replayed.wrap("n1", {**end, "admin": "replayed"})
    for raw in [forger.wrap("n1", end), relay.wrap("n1", end), json.dumps(end), once,
                replayed.wrap("n2", end)]:  # fmt: skip
        await redis.publish(channel, raw)
    await redis.publish(channel, once)
    genuine.post("n1", {**end, "admin": "genuine"})

    async def heard() -> bool:
        return any(m.get("admin") == "genuine" for m in peer.received)

    await eventually(heard, "the genuine message")
    assert [m["admin"] for m in peer.received] == ["replayed", "genuine"]
    refused = {reason: n for (kind, reason), n in bus.seal.refusals.items() if kind == "msg"}
    assert refused == {"forged": 3, "unsigned": 1, "replayed": 1}
