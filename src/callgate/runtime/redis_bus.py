"""The bus between signaling nodes, on Redis (docs/scaling.md says why pub/sub, not streams).

Keys (all under `callgate:`):

- `dev:{handle}` — hash, device id → the device and its node, sealed (subject: the handle and
  the device id): who is connected where. An entry not sealed for that handle and device is
  never rung.
- `nodedev:{node}` — set of "handle device-id" a node announced, so a node that restarts under
  the same id removes what its previous life left.
- `snap:{node}` — the node's live calls and presence, sealed (runtime/cluster_seal.py),
  rewritten every `interval` seconds with a time to live of `ttl`: a node whose snapshot
  expired is dead to the others (its devices are not rung, its calls not listed), and so is
  one whose snapshot is not signed with the node signing key, or stale.
- `nodes` — set of node ids that ever published a snapshot.
- channel `node:{node}` — messages to that node (signaling/cluster.py lists them), each in a
  signed envelope (runtime/node_envelope.py): the hub sees only messages sealed with the node
  key for this node, fresh, and not seen before.
- `relay:{id}` — the separate relays' registrations (runtime/relay_registry.py), found by a
  SCAN every RELAY_SCAN_EVERY seconds and read at each beat: `relays()` lists the live ones.
- channel `pairs` — the two users of each call as it is placed (sealed), published before anyone rings,
  so call-bound registered relays admit them at once (`announce_pair`).

`devices_of` (each invite) rings a device only if its node is alive: a sealed, fresh snapshot,
as the last beat read it (a dead node stops counting within `ttl` + `interval` of its last
snapshot), or read at once if the beats are late.

Redis down: `devices_of` raises `ClusterUnavailable` (new calls are refused), posts are dropped,
`available` is false. A background loop retries every `interval`; once Redis answers again the
node announces its connected devices anew (a restarted Redis has lost them) and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callgate.runtime.cluster_seal import ClusterSeal
from callgate.runtime.node_envelope import NodeEnvelope
from callgate.runtime.relay_registry import (
    ENTRY_AGE,
    PAIRS_CHANNEL,
    RELAY_SCAN_EVERY,
    find_relays,
    read_relays,
    request_drain,
)
from callgate.signaling.cluster import ClusterPeer, ClusterUnavailable, RemoteDevice
from callgate.signaling.relay_choice import RelayInfo

log = logging.getLogger(__name__)

PREFIX = "callgate:"
INTERVAL = 1.0  # seconds between snapshots (and reconnect attempts)
TTL = 5  # seconds a node's snapshot lives: a node silent this long is dead to the others
FRESH_BEATS = 2  # `devices_of` trusts the snapshots read this many intervals ago at most
PAIR_WITHIN = 1.0  # seconds an invite waits at most for the relays to hear of its parties
# A directory entry is written once, as its device connects, and removed as it leaves: its age
# is not checked, so a Redis writer can put back an old genuine entry — of that same user and
# device, on a node that must still be alive (sealed snapshot) to be rung.
DEVICE_AGE = float("inf")
_DOWN = (RedisError, OSError)


def _device_subject(handle: str, device_id: str) -> str:
    return json.dumps([handle, device_id])  # unambiguous, whatever the two hold


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBus:
    def __init__(
        self,
        url: str,
        node_id: str,
        seal: ClusterSeal,
        *,
        interval: float = INTERVAL,
        ttl: int = TTL,
        relay_scan_every: float = RELAY_SCAN_EVERY,
    ) -> None:
        self.node_id = node_id
        self._relay_scan_every = relay_scan_every
        self.seal = seal
        self.envelope = NodeEnvelope(seal, node_id)
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10
        )
        self._interval = interval
        self._ttl = ttl
        self._peer: ClusterPeer | None = None
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._snapshots_at = float("-inf")  # loop time of the beat that read them
        self._relays: list[RelayInfo] = []
        self._relay_ids: list[str] = []  # found by the last scan (relay_registry.find_relays)
        self._relays_found_at = float("-inf")  # loop time of that scan
        self._beating = False
        self._subscribed = False
        self._lost = True  # Redis may have lost this node's devices: announce them again
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.posted = 0
        self.dropped = 0

    @property
    def client(self) -> Redis:
        """The node's Redis client, for what else it shares through Redis (cluster_limits.py)."""
        return self._redis

    @property
    def available(self) -> bool:
        return self._beating and self._subscribed

    def health(self) -> dict[str, Any]:
        """For /healthz: reachable or not, and the other live nodes this node sees."""
        return {
            "ok": self.available,
            "node": self.node_id,
            "peers": sorted(self._snapshots) if self.available else [],
        }

    def attach(self, peer: ClusterPeer) -> None:
        self._peer = peer

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Clear what this node's previous life left, then run; Redis down at start is not an
        error (the node refuses calls until it comes back)."""
        try:
            await self._forget_node(self.node_id)
            await self._beat()
        except _DOWN as exc:
            log.warning("Redis unreachable at start (%s); new calls refused until it answers", exc)
            self._beating, self._lost = False, True
        self._tasks = [
            asyncio.create_task(self._run_beat(), name="cluster-beat"),
            asyncio.create_task(self._run_listen(), name="cluster-listen"),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, *_DOWN):
                await task
        with contextlib.suppress(*_DOWN):
            await self._forget_node(self.node_id)
            await self._redis.delete(f"{PREFIX}snap:{self.node_id}")
        await self._redis.aclose()

    # -- presence ----------------------------------------------------------------------------------

    async def devices_of(self, handle: str) -> list[RemoteDevice]:
        try:
            entries = await self._redis.hgetall(f"{PREFIX}dev:{handle}")
            found = (self._device(handle, _text(d), raw) for d, raw in entries.items())
            devices = [device for device in found if device is not None]
            others = sorted({d.node for d in devices if d.node != self.node_id})
            alive = await self._alive(others) if others else set()
        except _DOWN as exc:
            self._beating, self._lost = False, True
            raise ClusterUnavailable(f"the cluster bus (Redis) is unreachable: {exc}") from None
        if not self.available:
            raise ClusterUnavailable("the cluster bus (Redis) is reconnecting")
        return [d for d in devices if d.node != self.node_id and d.node in alive]

    async def _alive(self, nodes: list[str]) -> set[str]:
        """The nodes among `nodes` with a snapshot signed by a node and fresh, not
        merely present (a Redis writer's unsigned or forged snapshot must not make its node
        ringable): those of the copy the last beat read and verified, if that beat is recent
        (one MGET and a MAC check per node saved on every invite); else read now. A dead node's
        snapshot expires after `ttl`: the next beat, within `interval`, drops it."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._snapshots_at <= FRESH_BEATS * self._interval:
            return {n for n in nodes if n in self._snapshots}
        raw = await self._redis.mget([f"{PREFIX}snap:{n}" for n in nodes])
        return {
            n
            for n, r in zip(nodes, raw, strict=True)
            if r is not None and isinstance(self.seal.open("snap", n, r, ENTRY_AGE), dict)
        }

    def _device(self, handle: str, device_id: str, raw: bytes | str) -> RemoteDevice | None:
        """A directory entry, if sealed by a node for this very handle and device: a Redis
        writer cannot add a device to a user, nor move one user's entry to another."""
        data = self.seal.open("dev", _device_subject(handle, device_id), raw, DEVICE_AGE)
        try:
            device = RemoteDevice.from_json(data)
        except (TypeError, KeyError, ValueError, AttributeError):
            return None  # unsigned, forged or malformed: not rung
        return device if (device.handle, device.device_id) == (handle, device_id) else None

    def device_up(self, device: RemoteDevice) -> None:
        self._background_call(self._announce([device]))

    def device_down(self, device: RemoteDevice) -> None:
        self._background_call(self._withdraw(device))

    async def _announce(self, devices: list[RemoteDevice]) -> None:
        if not devices:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for device in devices:
                subject = _device_subject(device.handle, device.device_id)
                entry = self.seal.seal("dev", subject, device.as_json())
                pipe.hset(f"{PREFIX}dev:{device.handle}", device.device_id, entry)
                pipe.sadd(f"{PREFIX}nodedev:{self.node_id}", f"{device.handle} {device.device_id}")
            await pipe.execute()

    async def _withdraw(self, device: RemoteDevice) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(f"{PREFIX}dev:{device.handle}", device.device_id)
            pipe.srem(f"{PREFIX}nodedev:{self.node_id}", f"{device.handle} {device.device_id}")
            await pipe.execute()

    async def _forget_node(self, node: str) -> None:
        key = f"{PREFIX}nodedev:{node}"
        members = await self._redis.smembers(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                handle, _, device_id = _text(member).partition(" ")
                pipe.hdel(f"{PREFIX}dev:{handle}", device_id)
            pipe.delete(key)
            await pipe.execute()

    # -- messages ----------------------------------------------------------------------------------

    def post(
        self,
        node: str,
        message: dict[str, Any],
        undelivered: Callable[[], None] | None = None,
    ) -> None:
        self.posted += 1
        channel, data = f"{PREFIX}node:{node}", self.envelope.wrap(node, message)

        async def publish() -> None:
            # PUBLISH answers how many subscribers got it: none means the node is gone (Redis
            # saw its connection close), known at once rather than after its snapshot expires.
            receivers = await self._redis.publish(channel, data)
            if receivers == 0 and undelivered is not None:
                undelivered()

        self._background_call(publish())

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return dict(self._snapshots) if self.available else {}

    async def announce_pair(self, users: tuple[str, str], *, live: bool = True) -> None:
        """Publish on `pairs` for the registered relays (runtime/relay_registry.py); none
        registered, or Redis down: nothing (their snapshots of this node still list the call)."""
        if not self._relays or not self.available:
            return
        data = self.seal.seal("pair", "", {"node": self.node_id, "pair": list(users), "live": live})
        try:
            async with asyncio.timeout(PAIR_WITHIN):
                await self._redis.publish(PAIRS_CHANNEL, data)
        except (TimeoutError, *_DOWN) as exc:
            log.warning("could not announce a call's parties to the relays: %s", exc)

    async def drain_relay(self, relay_id: str) -> RelayInfo | None:
        """Ask a registered relay to drain (runtime/relay_registry.py); None if not live."""
        return await request_drain(self._redis, self.seal, relay_id)

    def relays(self) -> list[RelayInfo]:
        """The separate relays alive at the last beat (none while Redis is unreachable)."""
        return list(self._relays) if self.available else []

    def _background_call(self, work: Any) -> None:
        async def run() -> None:
            try:
                await work
            except _DOWN as exc:
                self.dropped += 1
                self._beating, self._lost = False, True
                log.warning("cluster bus write failed: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- background --------------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Publish this node's snapshot and read the others'; the first after an outage
        announces the connected devices again."""
        peer = self._peer
        if self._lost:
            self._relays_found_at = float("-inf")  # Redis may have been emptied: scan again
        if self._lost and peer is not None:
            # first: another node that sees this snapshot finds the devices too
            await self._announce(peer.local_devices())
        self._lost = False
        snapshot = self.seal.seal("snap", self.node_id, peer.snapshot() if peer is not None else {})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{PREFIX}snap:{self.node_id}", snapshot, ex=self._ttl)
            pipe.sadd(f"{PREFIX}nodes", self.node_id)
            pipe.smembers(f"{PREFIX}nodes")
            _set, _added, members = await pipe.execute()
        others = sorted(_text(m) for m in members if _text(m) != self.node_id)
        raw = await self._redis.mget([f"{PREFIX}snap:{n}" for n in others]) if others else []
        opened = {
            n: self.seal.open("snap", n, r, ENTRY_AGE)
            for n, r in zip(others, raw, strict=True)
            if r
        }
        self._snapshots = {n: snap for n, snap in opened.items() if isinstance(snap, dict)}
        self._snapshots_at = asyncio.get_running_loop().time()
        if self._snapshots_at - self._relays_found_at >= self._relay_scan_every:
            self._relay_ids = await find_relays(self._redis, self.seal)
            self._relays_found_at = self._snapshots_at
        self._relays = await read_relays(self._redis, self.seal, self._relay_ids)
        if not self._beating:
            if self._tasks:
                log.warning("the cluster bus (Redis) answers again")
            self._beating = True

    async def _run_beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._beat()
            except _DOWN as exc:
                if self._beating:
                    log.warning("the cluster bus (Redis) is unreachable: %s", exc)
                self._beating, self._lost = False, True

    async def _run_listen(self) -> None:
        channel = f"{PREFIX}node:{self.node_id}"
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                self._subscribed = True
                while True:
                    frame = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if frame is not None and frame.get("type") == "message":
                        await self._dispatch(frame["data"])
            except _DOWN:
                self._subscribed, self._lost = False, True
                await asyncio.sleep(self._interval)
            finally:
                self._subscribed = False
                with contextlib.suppress(*_DOWN):
                    await pubsub.aclose()

    async def _dispatch(self, data: bytes) -> None:
        opened = self.envelope.unwrap(data)  # None: refused (counted and logged)
        if opened is not None and self._peer is not None:
            _sender, message = opened
            try:
                await self._peer.on_message(message)
            except Exception:
                log.exception("cluster message %s failed", message.get("op"))
