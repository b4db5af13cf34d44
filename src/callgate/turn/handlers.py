"""STUN/TURN request handling with no socket I/O: bytes and a client context in, response out.

Each method handler reads validate -> authorize -> act -> respond, citing RFC 8656 / RFC 8489.
Relay sockets come from an injected allocator, so these handlers run in unit tests without sockets.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callgate.clock import Clock
from callgate.stun import attributes as attrs
from callgate.stun.channel_data import valid_channel
from callgate.stun.constants import (
    KNOWN_ATTRIBUTES,
    REASONS,
    Attr,
    MessageClass,
    Method,
    comprehension_required,
)
from callgate.stun.message import (
    Message,
    StunDecodeError,
    build,
    decode,
    encode,
    integrity_attribute,
    verify_integrity,
)
from callgate.turn.allocate import (
    Allocator,
    Reject,
    allocate_options,
    bind_relays,
    granted_lifetime,
    unpack,
)
from callgate.turn.allocation import Allocation, ClientSend
from callgate.turn.auth import Authenticator, Credential
from callgate.turn.callbound import CallGuard, admit
from callgate.turn.config import TurnConfig
from callgate.turn.counters import TurnCounters
from callgate.turn.indications import SEND_INDICATION
from callgate.turn.limits import UserLimitsLookup, tighter_rate
from callgate.turn.manager import AllocationManager
from callgate.turn.peers import PeerFilter
from callgate.turn.send import relay_send_indication
from callgate.turn.throttle import AuthThrottle
from callgate.types import Address, FiveTuple
from callgate.types.events import EventKind

log = logging.getLogger(__name__)

_RESPONSE_CACHE_SECONDS = 40.0  # RFC 8489 §6.3.1: cover the client's retransmission window
_RESPONSE_CACHE_SIZE = 8192


@dataclass(slots=True)
class Client:
    """Who sent a message: their five-tuple and how to send them bytes."""

    five_tuple: FiveTuple
    send: ClientSend
    stream: bool  # TCP/TLS: ChannelData gets padded (RFC 8656 §12.5)
    # UDP clients: the listener socket's sendto, so relays can answer without a closure call.
    sendto: Callable[[bytes | memoryview, Address], object] | None = None


class TurnHandler:
    def __init__(
        self,
        config: TurnConfig,
        auth: Authenticator,
        peers: PeerFilter,
        allocator: Allocator,
        manager: AllocationManager,
        counters: TurnCounters,
        clock: Clock,
    ) -> None:
        self.config = config
        self.auth = auth
        self.peers = peers
        self.allocator = allocator
        self.manager = manager
        self.counters = counters
        self.clock = clock
        # Call-bound mode (config.call_bound): who may reach whom, from the signaling engine.
        # None while no engine is attached: every peer is then refused (fail closed).
        self.call_guard: CallGuard | None = None
        # Per-user limits from the user's groups (turn/limits.py); None: server-wide only.
        self.user_limits: UserLimitsLookup | None = None
        # Whether a new allocation's record can be written now (`serve`: the storage probe); None:
        # no records kept. False refuses Allocate with 508 rather than relay unrecorded.
        self.can_record: Callable[[], bool] | None = None
        # A relay being drained (`callgate turn --drain`): allocations it holds go on, new ones
        # are refused so that clients allocate on another relay.
        self.draining = False
        # Failed authentications throttled per source address and per username (turn/throttle.py).
        self.throttle = AuthThrottle(clock)
        self._refusal_logged = -math.inf  # monotonic time of the last call-bound refusal logged
        self._software: list[tuple[int, bytes]] = (
            [(int(Attr.SOFTWARE), attrs.pack_text(config.software))] if config.software else []
        )
        self._recent: OrderedDict[tuple[Address, bytes], tuple[float, bytes]] = OrderedDict()
        self._methods: dict[int, Callable[[Message, Client, Credential], bytes]] = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
        }

    # -- entry point -------------------------------------------------------------------------

    def handle(self, data: bytes, client: Client) -> bytes | None:
        """Process one STUN message; return the response to send, if any.

        Malformed input is dropped and counted (never answered): it may be spoofed.
        """
        if data[:2] == SEND_INDICATION:
            self._send_indication(data, client)
            return None
        try:
            message = decode(data)
        except StunDecodeError as exc:
            self.counters.malformed_dropped += 1
            log.debug("dropped malformed STUN from %s: %s", client.five_tuple.client, exc)
            return None
        if message.cls is MessageClass.INDICATION:
            return None  # other indications (Binding keepalives) need nothing
        if message.cls is not MessageClass.REQUEST:
            return None
        return self._request(message, client)

    def _request(self, message: Message, client: Client) -> bytes:
        name = _method_name(message.method)
        self.counters.requests[name] = self.counters.requests.get(name, 0) + 1
        if message.method == Method.BINDING:
            return self._binding(message, client)
        cache_key = (client.five_tuple.client, message.transaction_id)
        cached = self._recent.get(cache_key)
        if cached is not None and cached[0] > self.clock.monotonic():
            return cached[1]  # a retransmission: answer as before (RFC 8489 §6.3.1)
        handler = self._methods.get(message.method)
        if handler is None:
            response = self._error(message, 400, reason="Unknown method")
        else:
            response = self._authenticated(message, client, handler)
        self._remember(cache_key, response)
        return response

    def _remember(self, key: tuple[Address, bytes], response: bytes) -> None:
        recent = self._recent
        recent[key] = (self.clock.monotonic() + _RESPONSE_CACHE_SECONDS, response)
        while len(recent) > _RESPONSE_CACHE_SIZE:
            recent.popitem(last=False)

    # -- STUN Binding (RFC 8489 §6.3.1) --------------------------------------------------------

    def _binding(self, message: Message, client: Client) -> bytes:
        unknown = _unknown_required(message)
        if unknown:
            return self._error(message, 420, extra=[_unknown_attr(unknown)])
        tid = message.transaction_id
        body: list[tuple[int, bytes]] = [
            (Attr.XOR_MAPPED_ADDRESS, attrs.pack_xor_address(client.five_tuple.client, tid))
        ]
        self.counters.binding_requests += 1
        return self._success(message, body, None)

    # -- authentication (RFC 8489 §9.2.4) ------------------------------------------------------

    def _authenticated(
        self,
        message: Message,
        client: Client,
        handler: Callable[[Message, Client, Credential], bytes],
    ) -> bytes:
        client_ip = client.five_tuple.client[0]
        if integrity_attribute(message) is None:
            return self._challenge(message, 401, client_ip)
        username = message.get(Attr.USERNAME)
        realm = message.get(Attr.REALM)
        nonce = message.get(Attr.NONCE)
        if username is None or realm is None or nonce is None:
            self.counters.auth_failures += 1
            return self._error(message, 400, reason="Missing USERNAME, REALM or NONCE")
        try:
            name = attrs.unpack_text(username, "USERNAME")
            nonce_text = attrs.unpack_text(nonce, "NONCE")
        except StunDecodeError:
            return self._error(message, 400)
        if not self.auth.nonce_valid(nonce_text, client_ip):
            return self._challenge(message, 438, client_ip)
        wait = self.throttle.blocked(client_ip, name)
        if wait > 0.0:
            # RFC 8656 §18: 403 "valid but cannot be performed due to administrative or similar
            # restrictions"; the credentials are not even checked while blocked.
            self.counters.auth_throttled += 1
            reason = f"Too many failed authentications; retry in {math.ceil(wait)} s"
            return self._error(message, 403, reason=reason)
        credential = self.auth.credential(name)
        if (
            credential is None
            or realm != self.auth.realm.encode()
            or not verify_integrity(message, credential.key)
        ):
            self.counters.auth_failures += 1
            if not self.auth.ephemeral(name):
                # A REST credential is an HMAC under the server's secret, not a password guess: a
                # wrong or expired one counts nowhere, so a stale credential behind a shared NAT
                # cannot lock a whole office out.
                self.throttle.failed(client_ip, name)
            return self._challenge(message, 401, client_ip)
        unknown = _unknown_required(message)
        if unknown:
            return self._error(message, 420, credential.key, extra=[_unknown_attr(unknown)])
        try:
            return handler(message, client, credential)
        except Reject as reject:
            return self._error(
                message, reject.code, credential.key, extra=list(reject.extra), reason=reject.reason
            )

    def _challenge(self, message: Message, code: int, client_ip: str) -> bytes:
        """401 or 438 with a fresh nonce and the realm, unprotected (RFC 8489 §9.2.4)."""
        extra = [
            (Attr.REALM, attrs.pack_text(self.auth.realm)),
            (Attr.NONCE, attrs.pack_text(self.auth.new_nonce(client_ip))),
        ]
        return self._error(message, code, extra=extra)

    # -- Allocate (RFC 8656 §7.2) --------------------------------------------------------------

    def _allocate(self, message: Message, client: Client, cred: Credential) -> bytes:
        existing = self.manager.get(client.five_tuple)
        if existing is not None:
            if existing.allocate_tid == message.transaction_id:
                return existing.allocate_response
            raise Reject(437)
        options = allocate_options(message, self.allocator)
        if self.draining:
            # RFC 8656 §7.2/§18: 508 Insufficient Capacity; the client's other relays serve it.
            raise Reject(508, reason="Relay draining: allocate on another relay")
        if self.can_record is not None and not self.can_record():
            # RFC 8656 §7.2/§18: 508 Insufficient Capacity, here the store's; retry later.
            raise Reject(508, reason="Allocation cannot be recorded now (storage full)")
        limits = self.user_limits(cred.user) if self.user_limits is not None else None
        refusal = self.manager.quota_refusal(cred.user)
        held = self.manager.allocations_of(cred.user)
        if refusal is None and limits is not None and not limits.allows_more(held):
            refusal = f"Allocation Quota Reached: {limits.max_allocations} for your group"
        if refusal is not None:
            self.counters.quota_rejections += 1
            raise Reject(486, reason=refusal)
        allocation = Allocation(
            client.five_tuple,
            cred.username,
            cred.user,
            cred.key,
            client.send,
            client.stream,
            self.clock.wall(),
        )
        allocation.udp_sendto = client.sendto
        allocation.counters = self.counters
        address_error = bind_relays(allocation, self.allocator, options)
        reservation = address_error if isinstance(address_error, bytes) else None
        lifetime = granted_lifetime(message, self.config, allow_zero=False)
        allocation.lifetime = lifetime
        allocation.expires = self.clock.monotonic() + lifetime
        allocation.integrity = integrity_attribute(message) or int(Attr.MESSAGE_INTEGRITY)
        if message.has(Attr.DONT_FRAGMENT):
            allocation.dont_fragment = True
            for relay in allocation.relays.values():
                relay.set_dont_fragment()
        rate = tighter_rate(
            self.config.max_bandwidth_per_allocation,
            limits.bytes_per_s if limits is not None else None,
        )
        if rate:
            allocation.cap(rate, self.clock.monotonic)
        tid = message.transaction_id
        body: list[tuple[int, bytes]] = [
            (Attr.XOR_RELAYED_ADDRESS, attrs.pack_xor_address(relay.address, tid))
            for relay in allocation.relays.values()
        ]
        body.append((Attr.LIFETIME, attrs.pack_uint32(lifetime)))
        if reservation is not None:
            body.append((Attr.RESERVATION_TOKEN, reservation))
        if isinstance(address_error, tuple):
            body.append(address_error)
        body.append(
            (Attr.XOR_MAPPED_ADDRESS, attrs.pack_xor_address(client.five_tuple.client, tid))
        )
        response = self._success(message, body, cred.key)
        allocation.allocate_tid = tid
        allocation.allocate_response = response
        refusal = self.manager.add(allocation)
        if refusal is not None:
            # another worker took the last slot since the check above (turn/ledger.py)
            allocation.close()
            self.counters.quota_rejections += 1
            raise Reject(486, reason=refusal)
        return response

    # -- Refresh (RFC 8656 §8) ---------------------------------------------------------------

    def _refresh(self, message: Message, client: Client, cred: Credential) -> bytes:
        allocation = self._owned(client, cred)
        family = message.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family is not None and unpack(attrs.unpack_family, family) not in allocation.relays:
            raise Reject(443)
        lifetime = granted_lifetime(message, self.config, allow_zero=True)
        if lifetime == 0:
            self.manager.remove(allocation, "refresh-0")
        else:
            allocation.lifetime = lifetime
            allocation.expires = self.clock.monotonic() + lifetime
            self.manager.emit(allocation, EventKind.REFRESHED)
        return self._success(message, [(Attr.LIFETIME, attrs.pack_uint32(lifetime))], cred.key)

    # -- CreatePermission (RFC 8656 §10) -----------------------------------------------------

    def _create_permission(self, message: Message, client: Client, cred: Credential) -> bytes:
        allocation = self._owned(client, cred)
        values = message.get_all(Attr.XOR_PEER_ADDRESS)
        if not values:
            raise Reject(400, reason="Missing XOR-PEER-ADDRESS")
        peers = [self._peer(allocation, value, message.transaction_id) for value in values]
        expires = self.clock.monotonic() + self.config.permission_lifetime
        for host, _port in peers:
            allocation.permit(host, expires)
            self.manager.emit(allocation, EventKind.PERMISSION, detail=host)
        return self._success(message, [], cred.key)

    # -- ChannelBind (RFC 8656 §11.2) -------------------------------------------------------

    def _channel_bind(self, message: Message, client: Client, cred: Credential) -> bytes:
        allocation = self._owned(client, cred)
        number_value = message.get(Attr.CHANNEL_NUMBER)
        peer_value = message.get(Attr.XOR_PEER_ADDRESS)
        if number_value is None or peer_value is None:
            raise Reject(400, reason="Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS")
        number = unpack(attrs.unpack_channel_number, number_value)
        if not valid_channel(number):
            raise Reject(400, reason=f"Channel number 0x{number:04x} outside 0x4000-0x7FFF")
        peer = self._peer(allocation, peer_value, message.transaction_id)
        bound = allocation.channels.get(number)
        if bound is not None and bound.peer != peer:
            raise Reject(400, reason="Channel already bound to another peer")
        if allocation.peer_channels.get(peer, number) != number:
            raise Reject(400, reason="Peer already bound to another channel")
        now = self.clock.monotonic()
        allocation.bind_channel(number, peer, now + self.config.channel_lifetime)
        allocation.permit(peer[0], now + self.config.permission_lifetime)
        self.manager.emit(
            allocation, EventKind.CHANNEL, detail=f"0x{number:04x} {peer[0]}:{peer[1]}"
        )
        return self._success(message, [], cred.key)

    # -- Send indication (RFC 8656 §11.2) ----------------------------------------------------

    def _send_indication(self, data: bytes, client: Client) -> None:
        """Relay a Send indication's DATA to its peer (turn/send.py, RFC 8656 §11.2)."""
        allocation = self.manager.get(client.five_tuple)
        relay_send_indication(data, allocation, self.config.call_bound, self.counters)

    # -- helpers -------------------------------------------------------------------------------

    def _owned(self, client: Client, cred: Credential) -> Allocation:
        """The client's allocation (437 if none), made with the same username (441)."""
        allocation = self.manager.get(client.five_tuple)
        if allocation is None:
            raise Reject(437)
        if allocation.username != cred.username:
            raise Reject(441)
        return allocation

    def _peer(self, allocation: Allocation, value: bytes, tid: bytes) -> Address:
        """Decode XOR-PEER-ADDRESS; family must match a relay (443), filter must allow it (403)."""
        peer = unpack(lambda v: attrs.unpack_xor_address(v, tid), value)
        if allocation.relay_for(peer[0]) is None:
            raise Reject(443)
        if self.config.call_bound:
            guard = self.call_guard
            if guard is None or not admit(guard, self.manager.by_relay, allocation, peer):
                self.counters.peers_refused += 1
                self._log_call_bound_refusal(allocation, peer, guard is None)
                raise Reject(403, reason="Call-bound relay: peer is not your call's other party")
            return peer
        # Another allocation's relayed address on this server is always a permitted peer: two
        # relay-only parties meet here, whatever range the relay addresses are in.
        if (
            not self.peers.permits(peer[0])
            and not self.manager.is_relay(peer)
            and not self._user_may_reach(allocation.user, peer[0])
        ):
            self.counters.peers_refused += 1
            raise Reject(403)
        return peer

    def _log_call_bound_refusal(
        self, allocation: Allocation, peer: Address, no_guard: bool
    ) -> None:
        """One INFO line a second at most: why a party's media could not start is then on record
        (the counter alone does not say whose, or whether the peer was on this relay at all)."""
        now = self.clock.monotonic()
        if now - self._refusal_logged < 1.0:
            return
        self._refusal_logged = now
        owner = self.manager.by_relay.get(peer)
        why = (
            "no call list yet"
            if no_guard
            else "peer is not on this relay"
            if owner is None
            else f"no live call between {allocation.user} and {owner.user}"
        )
        log.info("call-bound relay refused %s's peer %s:%d (%s)", allocation.user, *peer, why)

    def _user_may_reach(self, user: str, host: str) -> bool:
        """The extra peer ranges of the user's groups (turn/limits.py)."""
        limits = self.user_limits(user) if self.user_limits is not None else None
        return limits is not None and limits.permits_peer(host)

    def _success(self, request: Message, body: list[tuple[int, bytes]], key: bytes | None) -> bytes:
        response = build(
            request.method, MessageClass.SUCCESS, request.transaction_id, body + self._software
        )
        return self._encode(request, response, key)

    def _error(
        self,
        request: Message,
        code: int,
        key: bytes | None = None,
        *,
        extra: Sequence[tuple[int, bytes]] = (),
        reason: str | None = None,
    ) -> bytes:
        self.counters.errors[code] = self.counters.errors.get(code, 0) + 1
        body = [
            (int(Attr.ERROR_CODE), attrs.pack_error_code(code, reason or REASONS.get(code, "")))
        ]
        body += list(extra)
        response = build(
            request.method, MessageClass.ERROR, request.transaction_id, body + self._software
        )
        return self._encode(request, response, key)

    def _encode(self, request: Message, response: Message, key: bytes | None) -> bytes:
        integrity = integrity_attribute(request) or int(Attr.MESSAGE_INTEGRITY)
        return encode(response, key, integrity=integrity, fingerprint=request.has(Attr.FINGERPRINT))


def _unknown_required(message: Message) -> list[int]:
    """Comprehension-required attribute types we do not understand (RFC 8489 §6.3.1)."""
    return [t for t in message.types() if comprehension_required(t) and t not in KNOWN_ATTRIBUTES]


def _unknown_attr(types: list[int]) -> tuple[int, bytes]:
    return (Attr.UNKNOWN_ATTRIBUTES, attrs.pack_unknown_attributes(types))


def _method_name(method: int) -> str:
    try:
        return Method(method).name.lower()
    except ValueError:
        return "unknown"
