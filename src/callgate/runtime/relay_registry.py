"""Separate relays in Redis (docs/scaling.md, "Separate relays").

Keys (under `callgate:`, beside runtime/redis_bus.py's):

- `relay:{id}` — a `callgate turn` process (signaling/relay_choice.py's RelayInfo), sealed
  (runtime/cluster_seal.py), rewritten every `interval` seconds with a time to live of `ttl`: a
  relay that stops beating expires and is no longer handed out; one not signed with the cluster
  key, or stale, is never handed out.
  Nodes find the relays by scanning for these keys (`read_relays`): a relay writes no shared
  key, so it cannot hide, replace or drown another relay's registration.
- `relay-drain:{id}` — sealed (by a node, or with the relay's own key), set by `callgate turn
  --drain` or `POST /api/relays/{id}/drain`: the
  relay refuses new allocations (508) from its next beat, and exits once it holds none. The
  request names the relay's boot nonce (random, drawn at each start, carried in its sealed
  registration), and a relay obeys only a request naming its own: a request seen once cannot be
  replayed against the relay's next life under the same id.

The relay also reads the nodes' snapshots (`snap:{node}`) at each beat: call-bound relaying
admits two users only while some node lists a live call between them. A snapshot is up to a
beat old, and the relay reads it up to a beat later: so that a new call's parties are admitted
before their clients ask (their first ChannelBind follows the answer), the node publishes the
pair on channel `pairs` before anyone rings (runtime/redis_bus.py), and withdraws it when the
invite was refused; a pushed pair is admitted for PUSHED_GRACE seconds, by then the snapshots
list the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from callgate.config import NODE_ID
from callgate.runtime.cluster_seal import MAX_ENTRY_BYTES, ClusterSeal
from callgate.signaling.relay_choice import MAX_RELAYS, RelayInfo

log = logging.getLogger(__name__)

PREFIX = "callgate:"
INTERVAL = 1.0
STOP_WITHIN = 2.0  # seconds for the goodbye (keys deleted, connection closed)
TTL = 5
# seconds a call's two users stay admitted after the last node listed it: a call whose node died
# goes on relaying until a surviving node takes it over (the lease, docs/scaling.md)
GRACE = 30.0
PUSHED_GRACE = 10.0  # seconds a pair announced on `pairs` is admitted without a snapshot
PAIRS_CHANNEL = f"{PREFIX}pairs"
MAX_PUSHED = 100_000  # pairs announced and not yet expired, at most (oldest dropped)
ENTRY_AGE = 15.0  # seconds a sealed registration, snapshot or pair is believed (cluster_seal.py)
SCAN_COUNT = 1000  # keys Redis looks at per SCAN round trip
RELAY_SCAN_EVERY = 5.0  # seconds between two scans for relays' keys (a new relay is seen then)
DRAIN_TTL = 86_400  # a drain request outlives any drain (it binds one boot of the relay only)
_DOWN = (RedisError, OSError)


def relay_key(relay_id: str) -> str:
    return f"{PREFIX}relay:{relay_id}"


def drain_key(relay_id: str) -> str:
    return f"{PREFIX}relay-drain:{relay_id}"


def connect(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


async def read_relays(
    redis: Redis, seal: ClusterSeal, ids: list[str] | None = None
) -> list[RelayInfo]:
    """Every relay (of `ids`, default: all found by `find_relays`) whose registration is alive
    and signed with its relay key (malformed, unsigned, forged, stale, oversized or of the wrong
    type: left out and counted). Each is read at most MAX_ENTRY_BYTES (GETRANGE, before any
    MAC)."""
    if ids is None:
        ids = await find_relays(redis, seal)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for relay_id in ids:
            pipe.getrange(relay_key(relay_id), 0, MAX_ENTRY_BYTES)
        raw = await pipe.execute(raise_on_error=False)
    found = [_parsed(seal, relay_id, value) for relay_id, value in zip(ids, raw, strict=True)]
    return [entry[0] for entry in found if entry is not None]


async def find_relays(redis: Redis, seal: ClusterSeal) -> list[str]:
    """The ids of the relays' keys (`SCAN MATCH callgate:relay:*`), sorted: at most MAX_RELAYS
    that follow the node_id rule (others counted, `bad-id`).

    Relays are found by their keys, not by a set they write: a relay's Redis user can write only
    its own two keys (deploy/redis-users.acl), so it can neither hide another relay nor make the
    nodes fetch junk. SCAN walks the whole keyspace (≈ 15 ms of Redis CPU for 50,000 keys): a
    node scans every RELAY_SCAN_EVERY seconds and reads the relays it knows at each beat."""
    ids: list[str] = []
    async for key in redis.scan_iter(match=f"{PREFIX}relay:*", count=SCAN_COUNT):
        relay_id = _text(key)[len(f"{PREFIX}relay:") :]
        if not NODE_ID.fullmatch(relay_id):
            seal.refuse("relay", relay_id, "bad-id")
            continue
        ids.append(relay_id)
        if len(ids) >= MAX_RELAYS:
            break
    return sorted(ids)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parsed(seal: ClusterSeal, relay_id: str, raw: object) -> tuple[RelayInfo, str] | None:
    """A registration (GET or GETRANGE's answer) and the boot nonce of the relay that wrote it
    ("" from a relay too old to write one); None if not to be used: absent (expired), not a
    string (WRONGTYPE: "no such relay", counted, never "Redis down"), oversized, or not sealed."""
    if raw is None or raw == b"":
        return None
    if isinstance(raw, ResponseError):
        seal.refuse("relay", relay_id, "wrongtype")
        return None
    if not isinstance(raw, bytes | str):
        return None
    if len(raw) > MAX_ENTRY_BYTES:
        seal.refuse("relay", relay_id, "oversized")
        return None
    data = seal.open("relay", relay_id, raw, ENTRY_AGE)
    info = RelayInfo.from_json(data)  # None: malformed, left out
    if info is None or info.relay_id != relay_id:
        return None
    boot = data.get("boot")
    return info, boot if isinstance(boot, str) else ""


async def read_relay(redis: Redis, seal: ClusterSeal, relay_id: str) -> RelayInfo | None:
    """Relay `relay_id`'s registration, if alive and signed with its key."""
    found = _parsed(seal, relay_id, await _registration(redis, relay_id))
    return found[0] if found is not None else None


async def _registration(redis: Redis, relay_id: str) -> object:
    """Relay `relay_id`'s key, up to one byte more than MAX_ENTRY_BYTES (the error itself if it
    holds no string)."""
    try:
        return await redis.getrange(relay_key(relay_id), 0, MAX_ENTRY_BYTES)
    except ResponseError as exc:
        return exc


async def request_drain(redis: Redis, seal: ClusterSeal, relay_id: str) -> RelayInfo | None:
    """Ask relay `relay_id`, as it runs now (its boot nonce), to drain; its registration (None:
    no such live relay, or one too old to name its boot; nothing set). Sealed by a node, or by
    the relay's own key (runtime/cluster_seal.py)."""
    found = _parsed(seal, relay_id, await _registration(redis, relay_id))
    if found is None or not found[1]:
        return None
    info, boot = found
    request = seal.seal("drain", relay_id, {"boot": boot})
    await redis.set(drain_key(relay_id), request, ex=DRAIN_TTL)
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
        seal: ClusterSeal,
        *,
        interval: float = INTERVAL,
        ttl: int = TTL,
    ) -> None:
        self._redis = connect(url)
        self._info = info
        self._load = load
        self._on_drain = on_drain
        self._seal = seal
        self._interval = interval
        self._ttl = ttl
        self._pairs: dict[frozenset[str], float] = {}  # users of a live call -> last seen
        self._pushed: dict[frozenset[str], float] = {}  # users of a call just placed -> when
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False  # the loops end at their next turn even if a cancel is lost
        self.draining = False
        self.reachable = False
        self.boot = secrets.token_hex(16)  # this life of the relay: a drain request names it

    def together(self, user_a: str, user_b: str) -> bool:
        """Call-bound relaying: a live call between these users on some node (a beat old), or
        one a node announced as it placed it (PUSHED_GRACE seconds ago at most)."""
        pair = frozenset((user_a, user_b))
        if pair in self._pairs:
            return True
        pushed = self._pushed.get(pair)
        return pushed is not None and time.monotonic() - pushed <= PUSHED_GRACE

    async def start(self) -> None:
        pairs: PubSub | None = None
        try:
            # listening to the pairs nodes announce before registering: a node that sees this
            # relay may place a call on it at once, and its announcement is not repeated
            pairs = await self._subscribe()
            await self._beat()
        except _DOWN as exc:
            log.warning("Redis unreachable at start (%s): not registered until it answers", exc)
        self._tasks = [
            asyncio.create_task(self._run(), name="relay-presence"),
            asyncio.create_task(self._listen(pairs), name="relay-pairs"),
        ]

    async def _subscribe(self) -> PubSub:
        """A subscription to the pairs channel, once Redis has confirmed it."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(PAIRS_CHANNEL)
            async with asyncio.timeout(STOP_WITHIN):
                while True:
                    frame = await pubsub.get_message(timeout=1.0)
                    if frame is not None and frame.get("type") == "subscribe":
                        return pubsub
        except BaseException:
            with contextlib.suppress(TimeoutError, *_DOWN):
                await pubsub.aclose()
            raise

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WITHIN)
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
            if self._stopping:
                return
            try:
                await self._beat()
            except _DOWN as exc:
                if self.reachable:
                    log.warning("Redis unreachable: %s (registration expires)", exc)
                self.reachable = False
            except Exception:  # a bug must not stop the heartbeat for good
                log.exception("relay heartbeat failed")

    async def _listen(self, pubsub: PubSub | None) -> None:
        """The pairs nodes announce as they place calls (channel `pairs`), on the subscription
        `start` made (or a new one after Redis was lost)."""
        while not self._stopping:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                while not self._stopping:
                    frame = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if frame is not None and frame.get("type") == "message":
                        self._pushed_pair(frame["data"])
            except _DOWN:  # TimeoutError (a subscription unconfirmed) is an OSError
                await asyncio.sleep(self._interval)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(TimeoutError, *_DOWN):
                        async with asyncio.timeout(STOP_WITHIN):
                            await pubsub.aclose()
                pubsub = None

    def _pushed_pair(self, raw: bytes | str) -> None:
        message = self._seal.open("pair", "", raw, ENTRY_AGE)
        try:
            users, live = message["pair"], message.get("live", True) is not False
        except (TypeError, KeyError, AttributeError):
            return  # unsigned, forged, stale or malformed: admits nobody
        if not isinstance(users, list) or len(users) != 2:
            return
        pair = frozenset(map(str, users))
        self._pushed.pop(pair, None)
        if live:
            if len(self._pushed) >= MAX_PUSHED:
                del self._pushed[next(iter(self._pushed))]
            self._pushed[pair] = time.monotonic()

    def _drain_is_mine(self, raw: bytes | str) -> bool:
        """A sealed drain request for this relay's id and this boot (not a previous life's)."""
        request = self._seal.open("drain", self._info.relay_id, raw, DRAIN_TTL)
        boot = request.get("boot") if isinstance(request, dict) else None
        return isinstance(boot, str) and hmac.compare_digest(boot.encode(), self.boot.encode())

    async def _beat(self) -> None:
        relay_id = self._info.relay_id
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(drain_key(relay_id))
            pipe.smembers(f"{PREFIX}nodes")
            drain, nodes = await pipe.execute()
        if drain and not self.draining and self._drain_is_mine(drain):
            self.draining = True
            log.warning("relay %s draining: new allocations refused", relay_id)
            self._on_drain()
        info = replace(self._info, load=self._load(), draining=self.draining)
        async with self._redis.pipeline(transaction=False) as pipe:
            registration = {**info.as_json(), "boot": self.boot}
            pipe.set(relay_key(relay_id), self._seal.seal("relay", relay_id, registration),
                     ex=self._ttl)  # fmt: skip
            await pipe.execute()
        names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in nodes)
        snapshots = await self._redis.mget([f"{PREFIX}snap:{n}" for n in names]) if names else []
        now = time.monotonic()
        for node, raw in zip(names, snapshots, strict=True):
            if not raw:
                continue
            snapshot = self._seal.open("snap", node, raw, ENTRY_AGE)
            try:
                calls, pairs = list(snapshot.get("calls", [])), list(snapshot.get("pairs", []))
            except (AttributeError, TypeError):
                continue  # an unsigned, forged, stale or malformed snapshot admits nobody
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
        for pair, pushed in list(self._pushed.items()):
            if now - pushed > PUSHED_GRACE:
                del self._pushed[pair]
        if not self.reachable:
            log.info("relay %s registered in region %s", relay_id, self._info.region)
        self.reachable = True
