"""`callgate turn --node-id ID --redis-url URL --database-url URL`: a relay on its own machine,
registered for the signaling nodes (docs/scaling.md, "Separate relays"); and
`callgate turn --drain`, which asks such a relay to drain and waits until it has exited.

A registered relay is call-bound (it relays only between the parties of a live call some node
lists), signs only its own registration and drain request, with its own relay key
(runtime/cluster_keys.py; it checks the nodes' TURN REST credentials with the shared secret),
and writes its sessions to the cluster's database, where each call's record finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from functools import partial

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callgate.config import Settings
from callgate.errors import ConfigError
from callgate.metrics import MetricsServer
from callgate.records.relay_sessions import close_stale_sessions
from callgate.runtime.cluster_seal import ClusterSeal, node_seal, relay_seal
from callgate.runtime.relay_registry import RelayPresence, connect, read_relay, request_drain
from callgate.signaling.relay_choice import RelayInfo
from callgate.storage.db import Store, display_url, open_store
from callgate.storage.health import StorageHealth
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from callgate.types import Address, Transport

log = logging.getLogger("callgate")

WATCH = 0.5  # seconds between checks of a draining relay's allocations


def registered_config(settings: Settings, config: TurnConfig) -> TurnConfig:
    """Check a registered relay's settings; call-bound unless `turn.call_bound = false`."""
    if settings.node_id is None:
        raise ConfigError("--redis-url needs --node-id (this relay's id, unique in the cluster)")
    if settings.database_url is None:
        raise ConfigError(
            "a registered relay needs --database-url (the nodes' database): its sessions are "
            "how call records learn their relay use"
        )
    relay_seal(settings)  # its relay key is there, private and its own (ConfigError if not)
    if config.auth_secret is None:
        raise ConfigError(
            "a registered relay needs turn.auth_secret (CALLGATE_TURN__AUTH_SECRET): the TURN "
            "REST secret of the signaling nodes"
        )
    if settings.turn.workers > 1:
        raise ConfigError("a registered relay runs one process (turn.workers = 1)")
    if settings.turn.call_bound is None:
        config = dataclasses.replace(config, call_bound=True)
    return config


def _advertised(server: TurnServer) -> tuple[tuple[Address, ...], tuple[tuple[str, int], ...]]:
    """Where clients reach the relay: its listeners, a wildcard one by the relay address."""
    config = server.config
    udp: list[Address] = []
    tls: list[tuple[str, int]] = []
    for kind, (host, port) in server.bound:
        if host in ("0.0.0.0", "::"):
            host = config.relay_ip or config.relay_ip6 or host
        if kind is Transport.UDP:
            udp.append((host, port))
        elif kind is Transport.TLS:
            tls.append((config.tls_name or host, port))
    return tuple(dict.fromkeys(udp)), tuple(dict.fromkeys(tls))


def relay_info(settings: Settings, server: TurnServer) -> RelayInfo:
    config = server.config
    ips = {ip for ip in (config.relay_ip, config.relay_ip6) if ip}
    udp, tls = _advertised(server)
    return RelayInfo(
        relay_id=str(settings.node_id),
        region=settings.region,
        udp=udp,
        tls=tls,
        relay_ips=frozenset(ips or {host for host, _port in udp}),
        ports=(config.relay_port_min, config.relay_port_max),
        load=0,
        draining=False,
    )


async def run_registered(
    settings: Settings,
    config: TurnConfig,
    stop: asyncio.Event,
    announce: Callable[[TurnServer, MetricsServer | None], None],
) -> None:
    """Relay until `stop`, or until a drain leaves it without allocations."""
    from callgate.runtime import record_or_refuse  # the runtime's recorder, failing closed

    url = str(settings.database_url)
    # never migrated by a relay: its login need not own the schema (docs/scaling.md, "Trust")
    store: Store = await asyncio.to_thread(partial(open_store, url, migrate_schema=False))
    log.info("store %s open, schema current", display_url(url))
    try:
        closed = await asyncio.to_thread(
            close_stale_sessions, store.sessions, relay_id=settings.node_id
        )
        if closed:
            log.warning("closed %d relay session(s) left open by a previous run", closed)
        storage = StorageHealth(store)
        await asyncio.to_thread(storage.probe)
        sink, attach = record_or_refuse(storage, relay_id=settings.node_id)
        try:
            async with TurnServer(config, events=sink, auth_events=sink) as server:
                attach(server)
                await _registered(settings, server, stop, storage, announce)
        finally:
            await sink.aclose()
    finally:
        store.close()


async def _registered(
    settings: Settings,
    server: TurnServer,
    stop: asyncio.Event,
    storage: StorageHealth,
    announce: Callable[[TurnServer, MetricsServer | None], None],
) -> None:
    from callgate.runtime import metrics_endpoint  # the relay's counters and what it ignored

    assert settings.redis_url is not None

    def drain() -> None:
        server.handler.draining = True

    def load() -> int:
        return server.live_counters().allocations_active

    seal = relay_seal(settings)
    presence = RelayPresence(settings.redis_url.get_secret_value(), relay_info(settings, server),
                             load, drain, seal)  # fmt: skip
    server.handler.call_guard = presence.together
    probe = asyncio.create_task(storage.run(), name="storage-probe")
    await presence.start()

    def refusals() -> dict[tuple[str, str], int]:  # what this relay ignored from Redis
        return dict(seal.refusals)

    try:
        with metrics_endpoint(settings, server.live_counters, cluster=refusals) as metrics:
            announce(server, metrics)
            await _until_stopped_or_drained(settings, presence, load, stop)
    finally:
        probe.cancel()
        await presence.stop()
    log.info("stopping")


async def _until_stopped_or_drained(
    settings: Settings, presence: RelayPresence, load: Callable[[], int], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        if presence.draining and load() == 0:
            log.warning("relay %s drained: no allocation left; exiting", settings.node_id)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH)


async def drain(settings: Settings, wait: float | None, say: Callable[[str], None]) -> bool:
    """`callgate turn --drain`: ask relay `node_id` to drain, then wait (at most `wait`
    seconds, None: as long as it takes) until it has exited. True once it is gone."""
    if settings.redis_url is None or settings.node_id is None:
        raise ConfigError("--drain needs --redis-url and --node-id (the relay to drain)")
    # on a node (or an admin's machine) the node key; on the relay's own machine its relay key
    has_node_key = settings.cluster_key_file is not None or settings.cluster_key is not None
    seal = node_seal(settings) if has_node_key else relay_seal(settings)
    redis = connect(settings.redis_url.get_secret_value())
    try:
        return await _drain(redis, seal, settings.node_id, wait, say)
    except RedisError as exc:
        raise OSError(f"Redis unreachable: {exc}") from None
    finally:
        await redis.aclose()


async def _drain(
    redis: Redis, seal: ClusterSeal, relay_id: str, wait: float | None, say: Callable[[str], None]
) -> bool:
    info = await request_drain(redis, seal, relay_id)
    if info is None:
        raise ConfigError(f"no live relay {relay_id!r} is registered")
    say(f"relay {info.relay_id} draining: {info.load} allocation(s); waiting for it to exit")
    loop = asyncio.get_running_loop()
    until = None if wait is None else loop.time() + wait
    while until is None or loop.time() < until:
        if await read_relay(redis, seal, relay_id) is None:
            say(f"relay {info.relay_id} drained and gone")
            return True
        await asyncio.sleep(WATCH)
    return False
