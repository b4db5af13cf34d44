"""The SIP edge under `callgate serve`, when `sip.listen` / `--sip-listen` is set (docs/sip.md)."""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

from callgate.accounts.service import AccountService
from callgate.clock import Clock, SystemClock
from callgate.config import Settings, TrunkSettings
from callgate.errors import ConfigError
from callgate.policy.groups import GroupStore
from callgate.policy.store import PolicyStore
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.runtime.calling import Signaling
from callgate.signaling.anchoring import Anchoring
from callgate.signaling.hub import SignalingHub
from callgate.signaling.iceconfig import IceServerConfig, relay_config
from callgate.signaling.ring_groups import MAX_MEMBERS
from callgate.sip.attempts import Attempts
from callgate.sip.credentials import CredentialStore
from callgate.sip.dialout import DialOutRecords
from callgate.sip.digest_client import CarrierAuth
from callgate.sip.edge import SipEdge
from callgate.sip.media_peers import MediaPeers
from callgate.sip.trunks import Trunk, Trunks
from callgate.storage.db import Store
from callgate.turn.peers import PeerFilter

if TYPE_CHECKING:
    from redis.asyncio import Redis


async def start_sip(
    settings: Settings,
    store: Store,
    calls: Signaling | None = None,
    redis: Redis | None = None,
) -> SipEdge | None:
    """The edge listening on UDP and TCP at each `sip.listen` address and on TLS at each
    `sip.tls_listen` one, or None when neither is set;
    with `calls`, phones' INVITEs reach callgate users (sip_calls.py); with `redis` (several
    nodes), the trunks' and users' limits are the cluster's (cluster_limits.py)."""
    if not settings.sip.listen and not settings.sip.tls_listen:
        return None
    # the phones' calls (numpy, for their tones and silence): loaded only with a SIP edge
    from callgate.runtime.sip_calls import SipCalls
    from callgate.runtime.sip_dialout import DialOut
    from callgate.runtime.sip_numbers import NumberCalls

    context = None
    if settings.sip.tls_listen:
        cert, key = settings.turn.cert, settings.turn.key
        if cert is None or key is None:
            raise ConfigError(
                "sip.tls_listen (--sip-tls-listen) needs --cert/--key or --self-signed"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
    credentials = CredentialStore(store, settings.sip_realm())
    audit = AuditLog(store)
    attempts = Attempts(CdrRepository(store), audit)
    trunks = Trunks([_trunk(t) for t in settings.sip.trunks])
    groups = GroupStore(store)
    check_ring_groups(trunks, groups, settings.sip.ring_group_max_members)
    edge = SipEdge(
        credentials,
        audit,
        algorithms=settings.sip.algorithms,
        attempts=attempts,
        trunks=trunks,
        media=media_peers(settings),
        flow_timer=settings.sip.flow_timer,
    )
    if redis is not None and settings.node_id is not None:
        from callgate.runtime.cluster_limits import ClusterLimits

        shared = ClusterLimits(redis, settings.node_id)
        edge.trunk_limits.shared = shared
        await shared.start()
        edge.closing.append(shared.stop)
    if calls is not None:
        ice, clock = calls.ice, SystemClock()
        accounts = AccountService(store, settings.turn.realm)

        def groups_of(handle: str) -> tuple[str, ...]:
            user = accounts.get(handle)
            return user.groups if user is not None else ()

        records = DialOutRecords(CdrRepository(store))
        policy = PolicyStore(store)
        # phones and softphones dialling numbers: one decision, one live view (sip_live.py),
        # recorded by the recording service of calls between users (sip_recorded.py)
        anchoring = calls.hub.anchoring
        recordings = anchoring.recordings if isinstance(anchoring, Anchoring) else None
        dial = DialOut(
            edge, trunks, groups_of, records, settings.sip.media_ip, policy,
            recordings=recordings, setup_timeout=settings.calls.setup_timeout,
            silence_timeout=settings.calls.silence_timeout,
            max_hold_s=settings.calls.max_hold_s,
        )  # fmt: skip
        handler = SipCalls(
            calls.hub,
            calls.user_exists,
            lambda user: ice.ice_servers(user, clock.wall()),
            settings.sip.media_ip,
            dial,
            members_of=groups.members_of,
            holder_ice=functools.partial(holder_ice, calls.hub, ice, clock),
            max_members=settings.sip.ring_group_max_members,
            max_hold_s=settings.calls.max_hold_s,
        )
        handler.serve(edge)
        edge.closing.append(handler.close)
        if trunks.outbound is not None:  # softphones dial numbers (sip_numbers.py)
            calls.hub.numbers = NumberCalls(
                calls.hub,
                edge,
                dial,
                records,
                lambda user: ice.ice_servers(user, clock.wall()),
                settings.sip.media_ip,
            )
    try:
        listen = settings.sip.listen
        await edge.start(udp=listen, tcp=listen, tls=settings.sip.tls_listen, ssl=context)
    except OSError:
        await edge.close()
        raise
    return edge


def holder_ice(
    hub: SignalingHub, own: IceServerConfig, clock: Clock, user: str, call_id: str
) -> list[dict[str, Any]] | None:
    """ICE servers on the relay of the node holding `call_id`, when another node holds it
    (signaling/cluster_view.py): a phone's bridge here then shares a relay with the call's
    other side (a recorded call's anchor is on its holder's relay)."""
    endpoints = hub.holder_relay(call_id)
    config = relay_config(endpoints, own) if endpoints else None
    return config.ice_servers(user, clock.wall()) if config is not None else None


def media_peers(settings: Settings) -> MediaPeers:
    """Where calls' media may go: the relay's peer filter (turn/peers.py: its default ranges,
    `turn.allow_peers`, `turn.deny_peers`), widened by `sip.allow_media` for SIP alone."""
    allowed = [*settings.turn.allow_peers, *settings.sip.allow_media]
    devices = PeerFilter(settings.sip.allow_media, settings.turn.deny_peers)
    return MediaPeers(PeerFilter(allowed, settings.turn.deny_peers), devices)


def _trunk(t: TrunkSettings) -> Trunk:
    return Trunk(
        t.name,
        frozenset(t.addresses),
        dict(t.dids),
        t.outbound,
        frozenset(t.dial_out_groups),
        t.caller_id,
        routes=tuple(t.routes),
        country_code=t.country_code,
        national_prefix=t.national_prefix,
        number_format=t.number_format,
        max_calls=t.max_calls,
        max_cps=t.max_cps,
        max_calls_per_user=t.max_calls_per_user,
        max_calls_per_user_hour=t.max_calls_per_user_hour,
        options_interval=t.options_interval,
        options_failures=t.options_failures,
        auth=None
        if t.username is None or t.password is None
        else CarrierAuth(t.username, t.password.get_secret_value()),
        emergency=frozenset(t.emergency) if t.emergency is not None else None,
        did_groups=dict(t.did_groups),
        srtp_required=t.srtp == "required",
    )


def check_ring_groups(trunks: Trunks, groups: GroupStore, max_members: int = MAX_MEMBERS) -> None:
    """Every group a DID rings exists (a row, or an account naming it) and has at most
    `max_members` members: else a ConfigError saying which trunk, DID and group, before the
    edge listens. (A group that grows later has its calls refused: signaling/hub.py.)"""
    for trunk in trunks.all:
        for did, group in sorted(trunk.did_groups.items()):
            if not groups.known(group):
                raise ConfigError(
                    f"sip.trunks {trunk.name!r}: DID {did} rings group {group!r}, which does "
                    f"not exist (callgate group create {group}; add-member …)"
                )
            size = len(groups.members_of(group))
            if size > max_members:
                raise ConfigError(
                    f"sip.trunks {trunk.name!r}: DID {did} rings group {group!r}, which has "
                    f"{size} members, over sip.ring_group_max_members ({max_members})"
                )


def describe(edge: SipEdge | None) -> str:
    if edge is None:
        return ""
    bound = ", ".join(f"{kind} {host}:{port}" for kind, (host, port) in edge.bound)
    return f"; sip {bound} (realm {edge.realm})"
