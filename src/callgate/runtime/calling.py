"""Assembling calling for `callgate serve`: engine, hub and the `/ws` router, wired to the
accounts, the records and the running TURN server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.api.ws import WsSettings, signaling_router
from callgate.clock import Clock
from callgate.config import CallSettings
from callgate.recording.service import RecordingService
from callgate.records.cdr import CdrRepository
from callgate.records.quality_store import QualityRepository
from callgate.signaling.anchoring import Anchoring
from callgate.signaling.cluster import ClusterBus
from callgate.signaling.cluster_hub import ClusterHub
from callgate.signaling.engine import CallEngine
from callgate.signaling.handover import LEASE
from callgate.signaling.hub import CallPolicy, SignalingHub
from callgate.signaling.iceconfig import (
    ClusterIce,
    IceServerConfig,
    IceServers,
    relay_endpoints,
)
from callgate.signaling.relay_choice import RelayIce, RelayInfo
from callgate.turn.server import TurnServer
from callgate.types import Transport

USER_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Signaling:
    hub: SignalingHub
    router: APIRouter
    ice: IceServerConfig  # TURN REST credentials for server-side legs (the SIP edge's)
    user_exists: Callable[[str], bool]


def relay_addresses(server: TurnServer) -> set[str]:
    """The IPs our relayed transport addresses use: relay candidates must point at these."""
    config = server.config
    ips = {ip for ip in (config.relay_ip, config.relay_ip6) if ip}
    if not ips:
        ips = {host for _kind, (host, _port) in server.bound}
    return ips


def tls_urls(server: TurnServer) -> tuple[tuple[str, int], ...]:
    """(host, port) of each TURN-over-TLS listener, as clients are told in `turns:` URLs: the
    name of `turn.tls_name` (it must match the certificate), else the listener's address, else
    (a wildcard listener) the relay address."""
    config = server.config
    out = []
    for kind, (host, port) in server.bound:
        if kind is not Transport.TLS:
            continue
        if config.tls_name:
            host = config.tls_name
        elif host in ("0.0.0.0", "::"):
            host = config.relay_ip or config.relay_ip6 or host
        out.append((f"[{host}]" if ":" in host else host, port))
    return tuple(dict.fromkeys(out))


def build_signaling(
    settings: CallSettings,
    accounts: AccountService,
    cdrs: CdrRepository,
    quality: QualityRepository,
    server: TurnServer,
    secret: str,
    clock: Clock,
    call_policy: CallPolicy | None = None,
    recordings: RecordingService | None = None,
    node_id: str | None = None,
    bus: ClusterBus | None = None,
    lease: float = LEASE,
    relays: Callable[[], list[RelayInfo]] | None = None,
    region: str = "default",
) -> Signaling:
    """With `bus`, a node among several (signaling/cluster_hub.py); else the node alone. With
    `relays` (the registered relays, live), clients of `region` are handed those first."""
    engine = CallEngine(
        clock,
        ring_timeout=settings.ring_timeout,
        setup_timeout=settings.setup_timeout,
        silence_timeout=settings.silence_timeout,
        relay_addresses=relay_addresses(server),
    )
    attempts = settings.call_attempts_per_minute
    hub = (
        SignalingHub(
            engine, cdrs, quality, clock, node_id=node_id, policy=call_policy,
            call_attempts_per_minute=attempts,
        )
        if bus is None
        else ClusterHub(
            engine, cdrs, quality, clock, bus=bus, lease=lease, node_id=node_id,
            policy=call_policy,
            call_attempts_per_minute=attempts,
        )
    )  # fmt: skip
    udp = tuple(address for kind, address in server.bound if kind is Transport.UDP)
    tls = tls_urls(server)
    ice = IceServerConfig(udp=udp, tls=tls, secret=secret, ttl=settings.credential_ttl)
    anchoring: Anchoring | None = None
    if recordings is not None:
        anchoring = Anchoring(
            hub,
            recordings,
            lambda user: ice.ice_servers(user, clock.wall()),
            settings.setup_timeout,
            server.udp_client,  # the legs' packets to and from the relay stay in-process
        )
        hub.anchoring = anchoring
    if server.config.call_bound:
        if anchoring is not None:
            serves = anchoring.serves
            server.handler.call_guard = lambda a, b: hub.together(a, b) or serves(a, b)
        else:
            server.handler.call_guard = hub.together
    relay_only = settings.ice_policy == "relay"

    known: dict[str, float] = {}  # handle -> until when it is known to exist

    def user_exists(handle: str) -> bool:
        """Directory lookup for invites; existing handles are remembered for a few seconds so
        a busy server does not query the accounts table on every call attempt."""
        now = clock.monotonic()
        if known.get(handle, 0.0) > now:
            return True
        if accounts.get(handle) is None:
            return False
        if len(known) > 10000:
            known.clear()
        known[handle] = now + USER_CACHE_SECONDS
        return True

    def policy(_user: UserRecord) -> bool:
        return relay_only

    servers: IceServers = ice
    if isinstance(hub, ClusterHub):  # every live node's relay (signaling/iceconfig.py)
        hub.relay = relay_endpoints(ice)
        servers = ClusterIce(hub.bus.node_id, ice, hub.peer_relays)
        if relays is not None:  # separate relays (signaling/relay_choice.py)
            hub.relay_ice = RelayIce(region, ice, relays, servers)
            servers = hub.relay_ice
    ws = WsSettings(
        verify_token=accounts.verify_token,
        valid_tokens=accounts.valid_tokens,
        user_exists=user_exists,
        relay_only=policy,
        ice=servers,
        clock=clock,
        max_devices_per_user=settings.max_devices_per_user,
    )
    return Signaling(hub, signaling_router(hub, ws), ice, user_exists)
