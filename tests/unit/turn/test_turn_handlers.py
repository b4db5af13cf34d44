"""TurnHandler without sockets: a fake relay allocator, a manual clock, requests built with the codec.

Each test drives `TurnHandler.handle(bytes, Client)` the way a listener does and checks what the
client would see (the decoded response) or what a peer would receive (the fake relay's sendto).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.clock import ManualClock
from callgate.stun import attributes as attrs
from callgate.stun import channel_data
from callgate.stun.constants import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    PROTO_TCP,
    PROTO_UDP,
    Attr,
    MessageClass,
    Method,
)
from callgate.stun.message import (
    Message,
    build,
    decode,
    encode,
    new_transaction_id,
    verify_integrity,
)
from callgate.turn.allocation import Allocation, framed
from callgate.turn.auth import Authenticator, long_term_key, rest_password
from callgate.turn.config import TurnConfig
from callgate.turn.counters import TurnCounters
from callgate.turn.handlers import Client, TurnHandler
from callgate.turn.manager import AllocationManager
from callgate.turn.peers import PeerFilter
from callgate.turn.relay import InsufficientCapacity
from callgate.types import Address, FiveTuple, Transport
from callgate.types.events import EventKind, ListSink

REALM = "example.org"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ALICE_KEY = long_term_key("alice", REALM, "alice-pw")
SERVER: Address = ("192.0.2.10", 3478)
RELAY_IP4 = "192.0.2.10"
RELAY_IP6 = "2001:db8::10"
CLIENT: Address = ("198.51.100.1", 40000)
PEER: Address = ("203.0.113.5", 5000)
PEER2: Address = ("203.0.113.6", 6000)
PEER6: Address = ("2001:db8:ffff::5", 5000)

# An attribute, or a function of the transaction id giving one (XOR-PEER-ADDRESS for IPv6).
Attribute = tuple[int, bytes] | Callable[[bytes], tuple[int, bytes]]


# -- fakes ---------------------------------------------------------------------------------


@dataclass
class FakeRelay:
    address: Address
    family: int
    allocation: Allocation
    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    closed: bool = False
    dont_fragment: bool = False

    def set_dont_fragment(self) -> None:
        self.dont_fragment = True

    refuse: bool = False  # the kernel refuses every send (full socket buffer)

    def sendto(self, data: bytes | memoryview, peer: Address) -> None:
        if self.refuse:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        self.sent.append((bytes(data), peer))

    def receive(self, data: bytes, peer: Address) -> None:
        """A datagram from `peer` arrives on this relay socket."""
        self.allocation.from_peer(framed(data), len(data), peer)

    def close(self) -> None:
        self.closed = True


class FakeAllocator:
    """Hands out relays on consecutive ports; EVEN-PORT with R reserves port + 1 under a token."""

    def __init__(self, ipv6: bool = False) -> None:
        self.ipv6 = ipv6
        self.port = 50000
        self.relays: list[FakeRelay] = []
        self.reservations: dict[bytes, Address] = {}
        self.full = False

    def supports(self, family: int) -> bool:
        return family == FAMILY_IPV4 or (family == FAMILY_IPV6 and self.ipv6)

    def allocate(
        self, family: int, allocation: Allocation, *, even: bool = False, reserve: bool = False
    ) -> tuple[FakeRelay, bytes | None]:
        if self.full:
            raise InsufficientCapacity("no free relay port in range")
        self.port += 2 if even else 1
        if even:
            self.port &= ~1
        ip = RELAY_IP4 if family == FAMILY_IPV4 else RELAY_IP6
        relay = FakeRelay((ip, self.port), family, allocation)
        self.relays.append(relay)
        token = None
        if reserve:
            token = len(self.reservations).to_bytes(8, "big")
            self.reservations[token] = (ip, self.port + 1)
            self.port += 1
        return relay, token

    def take_reservation(self, token: bytes, allocation: Allocation) -> FakeRelay | None:
        address = self.reservations.pop(token, None)
        if address is None:
            return None
        relay = FakeRelay(address, FAMILY_IPV4, allocation)
        self.relays.append(relay)
        return relay


@dataclass
class FakeClient:
    """One client five-tuple and everything the server sent it outside responses."""

    address: Address = CLIENT
    stream: bool = False
    received: list[bytes] = field(default_factory=list)
    sendto: Callable[[bytes | memoryview, Address], object] | None = None

    @property
    def ctx(self) -> Client:
        transport = Transport.TCP if self.stream else Transport.UDP
        five_tuple = FiveTuple(self.address, SERVER, transport)
        return Client(five_tuple, self.received.append, self.stream, self.sendto)


class Server:
    def __init__(self, allocator: FakeAllocator | None = None, **config: Any) -> None:
        self.clock = ManualClock()
        self.config = TurnConfig(realm=REALM, users=dict(USERS), **config)
        self.counters = TurnCounters()
        self.sink = ListSink()
        self.auth = Authenticator(
            REALM, self.clock, static_users=USERS, nonce_lifetime=self.config.nonce_lifetime
        )
        self.allocator = allocator or FakeAllocator()
        self.manager = AllocationManager(
            self.clock,
            self.sink,
            self.counters,
            max_per_user=self.config.max_allocations_per_user,
            max_total=self.config.max_allocations_total,
        )
        self.handler = TurnHandler(
            self.config,
            self.auth,
            PeerFilter(self.config.allow_peers, self.config.deny_peers),
            self.allocator,
            self.manager,
            self.counters,
            self.clock,
        )

    def raw(self, data: bytes, client: FakeClient | None = None) -> bytes | None:
        return self.handler.handle(data, (client or FakeClient()).ctx)

    def signed(
        self,
        method: int,
        attributes: Sequence[Attribute] = (),
        *,
        client: FakeClient | None = None,
        user: str = "alice",
        password: str | None = None,
        nonce: str | None = None,
        tid: bytes | None = None,
        integrity: int = Attr.MESSAGE_INTEGRITY,
    ) -> bytes:
        """An authenticated request's bytes, with a nonce the server issued to the client."""
        client = client or FakeClient()
        tid = tid or new_transaction_id()
        nonce = nonce or self.auth.new_nonce(client.address[0])
        body = [a(tid) if callable(a) else a for a in attributes]
        body += [
            (Attr.USERNAME, user.encode()),
            (Attr.REALM, REALM.encode()),
            (Attr.NONCE, nonce.encode()),
        ]
        key = long_term_key(user, REALM, password or USERS[user])
        return encode(build(method, MessageClass.REQUEST, tid, body), key, integrity=integrity)

    def request(
        self,
        method: int,
        attributes: Sequence[Attribute] = (),
        *,
        client: FakeClient | None = None,
        user: str = "alice",
        password: str | None = None,
        nonce: str | None = None,
        integrity: int = Attr.MESSAGE_INTEGRITY,
    ) -> Message:
        data = self.signed(
            method,
            attributes,
            client=client,
            user=user,
            password=password,
            nonce=nonce,
            integrity=integrity,
        )
        response = self.raw(data, client)
        assert response is not None
        return decode(response)

    def allocate(
        self,
        extra: Sequence[Attribute] = (),
        *,
        client: FakeClient | None = None,
        user: str = "alice",
        password: str | None = None,
        nonce: str | None = None,
    ) -> Message:
        return self.request(
            Method.ALLOCATE,
            [transport_udp(), *extra],
            client=client,
            user=user,
            password=password,
            nonce=nonce,
        )

    def permit(self, *peers: Address, client: FakeClient | None = None) -> Message:
        return self.request(Method.CREATE_PERMISSION, [xor_peer(p) for p in peers], client=client)

    def bind(self, number: int, peer: Address, client: FakeClient | None = None) -> Message:
        return self.request(
            Method.CHANNEL_BIND,
            [(Attr.CHANNEL_NUMBER, attrs.pack_channel_number(number)), xor_peer(peer)],
            client=client,
        )

    def send_indication(self, peer: Address, data: bytes, client: FakeClient | None = None) -> None:
        tid = new_transaction_id()
        message = build(
            Method.SEND,
            MessageClass.INDICATION,
            tid,
            [(Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(peer, tid)), (Attr.DATA, data)],
        )
        assert self.raw(encode(message), client) is None  # indications are never answered

    def allocation(self, client: FakeClient | None = None) -> Allocation:
        allocation = self.manager.get((client or FakeClient()).ctx.five_tuple)
        assert allocation is not None, "no allocation"
        return allocation

    def has_allocation(self, client: FakeClient | None = None) -> bool:
        return self.manager.get((client or FakeClient()).ctx.five_tuple) is not None

    def relay(self) -> FakeRelay:
        return self.allocator.relays[-1]


def xor_peer(peer: Address) -> Callable[[bytes], tuple[int, bytes]]:
    return lambda tid: (Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(peer, tid))


def transport_udp() -> tuple[int, bytes]:
    return (Attr.REQUESTED_TRANSPORT, attrs.pack_requested_transport(PROTO_UDP))


def lifetime(seconds: int) -> tuple[int, bytes]:
    return (Attr.LIFETIME, attrs.pack_uint32(seconds))


def error_code(message: Message) -> int | None:
    value = message.get(Attr.ERROR_CODE)
    return None if value is None else attrs.unpack_error_code(value)[0]


def xor_attr(message: Message, attr: int) -> Address:
    value = message.get(attr)
    assert value is not None, f"no attribute 0x{attr:04x}"
    return attrs.unpack_xor_address(value, message.transaction_id)


def success(message: Message) -> Message:
    assert message.cls is MessageClass.SUCCESS, f"error {error_code(message)}"
    assert verify_integrity(message, ALICE_KEY)
    return message


@pytest.fixture
def server() -> Server:
    return Server()


# -- authentication (RFC 8489 §9.2.4) ------------------------------------------------------


def test_unauthenticated_request_gets_401_with_realm_and_nonce(server: Server) -> None:
    tid = new_transaction_id()
    request = encode(build(Method.ALLOCATE, MessageClass.REQUEST, tid, [transport_udp()]))
    response = decode(server.raw(request) or b"")
    assert (response.cls, response.transaction_id) == (MessageClass.ERROR, tid)
    assert error_code(response) == 401
    assert response.get(Attr.REALM) == REALM.encode()
    nonce = attrs.unpack_text(response.get(Attr.NONCE) or b"", "NONCE")
    assert server.auth.nonce_valid(nonce, CLIENT[0])
    assert not response.has(Attr.MESSAGE_INTEGRITY)
    # The nonce from the challenge works.
    success(server.allocate(nonce=nonce))


def test_integrity_without_username_is_400(server: Server) -> None:
    nonce = server.auth.new_nonce(CLIENT[0])
    body = [transport_udp(), (Attr.REALM, REALM.encode()), (Attr.NONCE, nonce.encode())]
    request = encode(
        build(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), body), ALICE_KEY
    )
    assert error_code(decode(server.raw(request) or b"")) == 400
    assert not server.has_allocation()


def test_expired_nonce_is_438_with_a_fresh_nonce(server: Server) -> None:
    nonce = server.auth.new_nonce(CLIENT[0])
    server.clock.advance(server.config.nonce_lifetime + 1)
    response = server.allocate(nonce=nonce)
    assert error_code(response) == 438
    fresh = attrs.unpack_text(response.get(Attr.NONCE) or b"", "NONCE")
    assert fresh != nonce and server.auth.nonce_valid(fresh, CLIENT[0])
    assert response.get(Attr.REALM) == REALM.encode()
    assert not server.has_allocation()
    success(server.allocate(nonce=fresh))


def test_forged_nonce_is_438(server: Server) -> None:
    genuine = server.auth.new_nonce(CLIENT[0])
    forged = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    assert error_code(server.allocate(nonce=forged)) == 438
    assert error_code(server.allocate(nonce="not-a-nonce")) == 438


def test_wrong_password_is_401_and_counted(server: Server) -> None:
    response = server.allocate(password="guess")
    assert error_code(response) == 401
    assert response.has(Attr.NONCE) and response.has(Attr.REALM)
    assert server.counters.auth_failures == 1
    assert not server.has_allocation()


def test_unknown_user_is_401(server: Server) -> None:
    assert error_code(server.allocate(user="mallory", password="x")) == 401
    assert server.counters.auth_failures == 1


def test_wrong_realm_is_401(server: Server) -> None:
    nonce = server.auth.new_nonce(CLIENT[0])
    body = [
        transport_udp(),
        (Attr.USERNAME, b"alice"),
        (Attr.REALM, b"other.org"),
        (Attr.NONCE, nonce.encode()),
    ]
    key = long_term_key("alice", "other.org", "alice-pw")
    request = encode(build(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), body), key)
    assert error_code(decode(server.raw(request) or b"")) == 401


def test_nonce_of_another_client_address_is_438(server: Server) -> None:
    nonce = server.auth.new_nonce("198.51.100.99")
    assert error_code(server.allocate(nonce=nonce)) == 438


def test_sha256_integrity_is_answered_in_kind(server: Server) -> None:
    response = server.request(
        Method.ALLOCATE, [transport_udp()], integrity=Attr.MESSAGE_INTEGRITY_SHA256
    )
    assert response.cls is MessageClass.SUCCESS
    assert Attr.MESSAGE_INTEGRITY_SHA256 in response.types()
    assert verify_integrity(response, ALICE_KEY)


def test_rest_credentials_allocate_then_expire() -> None:
    server = Server(auth_secret="s3cret")
    server.auth = Authenticator(REALM, server.clock, rest_secret="s3cret")
    server.handler.auth = server.auth
    username = f"{int(server.clock.wall()) + 60}:carol"
    password = rest_password("s3cret", username)
    response = server.allocate(user=username, password=password)
    assert response.cls is MessageClass.SUCCESS
    assert verify_integrity(response, long_term_key(username, REALM, password))
    assert server.sink.events[0].user == "carol"
    server.clock.advance(61)
    other = FakeClient(("198.51.100.1", 40001))
    assert error_code(server.allocate(user=username, password=password, client=other)) == 401


# -- unknown attributes (RFC 8489 §6.3.1, §14) ---------------------------------------------


def test_binding_with_unknown_required_attribute_is_420(server: Server) -> None:
    tid = new_transaction_id()
    request = build(Method.BINDING, MessageClass.REQUEST, tid, [(0x0031, b"\0\0\0\0")])
    response = decode(server.raw(encode(request)) or b"")
    assert error_code(response) == 420
    assert attrs.unpack_unknown_attributes(response.get(Attr.UNKNOWN_ATTRIBUTES) or b"") == [0x0031]


def test_binding_ignores_unknown_optional_attribute(server: Server) -> None:
    tid = new_transaction_id()
    request = build(Method.BINDING, MessageClass.REQUEST, tid, [(0x8031, b"\0\0\0\0")])
    response = decode(server.raw(encode(request, fingerprint=True)) or b"")
    assert response.cls is MessageClass.SUCCESS
    assert xor_attr(response, Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert response.types()[-1] == Attr.FINGERPRINT  # the request had one, so does the answer


def test_allocate_with_unknown_required_attribute_is_signed_420(server: Server) -> None:
    response = server.allocate([(0x0031, b"\0\0\0\0")])
    assert error_code(response) == 420
    assert attrs.unpack_unknown_attributes(response.get(Attr.UNKNOWN_ATTRIBUTES) or b"") == [0x0031]
    assert verify_integrity(response, ALICE_KEY)
    assert not server.has_allocation()


def test_allocate_ignores_unknown_optional_attribute(server: Server) -> None:
    success(server.allocate([(0x8031, b"\0\0\0\0")]))


# -- Allocate (RFC 8656 §7.2) --------------------------------------------------------------


def test_allocate_success(server: Server) -> None:
    response = success(server.allocate())
    relay = server.relay()
    assert xor_attr(response, Attr.XOR_RELAYED_ADDRESS) == relay.address
    assert xor_attr(response, Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == 600
    assert server.counters.allocations_active == 1
    created = [e for e in server.sink.events if e.kind is EventKind.CREATED]
    assert len(created) == 1
    assert (created[0].user, created[0].client, created[0].relay) == (
        "alice",
        CLIENT,
        relay.address,
    )


@pytest.mark.parametrize(("requested", "granted"), [(10, 600), (1200, 1200), (99999, 3600)])
def test_allocate_lifetime_is_clamped(server: Server, requested: int, granted: int) -> None:
    response = success(server.allocate([lifetime(requested)]))
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == granted


def test_allocate_without_requested_transport_is_400(server: Server) -> None:
    assert error_code(server.request(Method.ALLOCATE, [])) == 400


def test_allocate_tcp_is_442(server: Server) -> None:
    tcp = (Attr.REQUESTED_TRANSPORT, attrs.pack_requested_transport(PROTO_TCP))
    response = server.request(Method.ALLOCATE, [tcp])
    assert error_code(response) == 442
    assert verify_integrity(response, ALICE_KEY)


def test_second_allocate_is_437_but_retransmission_gets_the_same_answer(server: Server) -> None:
    tid = new_transaction_id()
    first = server.signed(Method.ALLOCATE, [transport_udp()], tid=tid)
    answer = server.raw(first)
    assert answer is not None and decode(answer).cls is MessageClass.SUCCESS
    assert server.raw(first) == answer  # retransmission: same bytes, no second relay
    assert len(server.allocator.relays) == 1
    assert error_code(server.allocate()) == 437
    # Beyond the retransmission cache the allocation itself still answers its own transaction.
    server.clock.advance(100)
    assert server.raw(first) == answer


def test_even_port_reservation_token_is_usable_by_a_second_allocate(server: Server) -> None:
    response = success(server.allocate([(Attr.EVEN_PORT, b"\x80")]))
    port = xor_attr(response, Attr.XOR_RELAYED_ADDRESS)[1]
    assert port % 2 == 0
    token = response.get(Attr.RESERVATION_TOKEN)
    assert token is not None and len(token) == 8
    other = FakeClient(("198.51.100.1", 40001))
    second = success(server.allocate([(Attr.RESERVATION_TOKEN, token)], client=other))
    assert xor_attr(second, Attr.XOR_RELAYED_ADDRESS) == (RELAY_IP4, port + 1)


def test_even_port_without_r_bit_returns_no_token(server: Server) -> None:
    response = success(server.allocate([(Attr.EVEN_PORT, b"\x00")]))
    assert xor_attr(response, Attr.XOR_RELAYED_ADDRESS)[1] % 2 == 0
    assert not response.has(Attr.RESERVATION_TOKEN)


def test_unknown_reservation_token_is_508(server: Server) -> None:
    assert error_code(server.allocate([(Attr.RESERVATION_TOKEN, b"12345678")])) == 508


def test_reservation_token_with_even_port_is_400(server: Server) -> None:
    extra = [(Attr.RESERVATION_TOKEN, b"12345678"), (Attr.EVEN_PORT, b"\x80")]
    assert error_code(server.allocate(extra)) == 400


def test_ipv6_requested_without_ipv6_is_440(server: Server) -> None:
    family = (Attr.REQUESTED_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    assert error_code(server.allocate([family])) == 440
    assert not server.has_allocation()


def test_ipv6_requested_with_ipv6(server: Server) -> None:
    server = Server(FakeAllocator(ipv6=True))
    family = (Attr.REQUESTED_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    response = success(server.allocate([family]))
    assert xor_attr(response, Attr.XOR_RELAYED_ADDRESS)[0] == RELAY_IP6


def test_additional_ipv6_without_ipv6_succeeds_with_address_error_code(server: Server) -> None:
    family = (Attr.ADDITIONAL_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    response = success(server.allocate([family]))
    assert [
        attrs.unpack_xor_address(v, response.transaction_id)[0]
        for v in response.get_all(Attr.XOR_RELAYED_ADDRESS)
    ] == [RELAY_IP4]
    value = response.get(Attr.ADDRESS_ERROR_CODE)
    assert value is not None
    assert value[0] == FAMILY_IPV6
    assert (value[2] & 0x07) * 100 + value[3] == 440


def test_additional_ipv6_with_ipv6_gives_two_relayed_addresses() -> None:
    server = Server(FakeAllocator(ipv6=True))
    family = (Attr.ADDITIONAL_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    response = success(server.allocate([family]))
    relayed = [
        attrs.unpack_xor_address(v, response.transaction_id)[0]
        for v in response.get_all(Attr.XOR_RELAYED_ADDRESS)
    ]
    assert relayed == [RELAY_IP4, RELAY_IP6]
    assert not response.has(Attr.ADDRESS_ERROR_CODE)


def test_requested_and_additional_family_together_is_400(server: Server) -> None:
    extra = [
        (Attr.REQUESTED_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV4)),
        (Attr.ADDITIONAL_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6)),
    ]
    assert error_code(server.allocate(extra)) == 400


def test_additional_family_ipv4_is_400(server: Server) -> None:
    extra = [(Attr.ADDITIONAL_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV4))]
    assert error_code(server.allocate(extra)) == 400


def test_dont_fragment_sets_df_on_the_relay(server: Server) -> None:
    success(server.allocate([(Attr.DONT_FRAGMENT, b"")]))
    assert server.relay().dont_fragment


def test_quota_per_user_is_486() -> None:
    server = Server(max_allocations_per_user=1)
    success(server.allocate())
    second = FakeClient(("198.51.100.1", 40001))
    assert error_code(server.allocate(client=second)) == 486
    assert server.counters.quota_rejections == 1
    # Another user is not affected.
    assert server.allocate(client=second, user="bob").cls is MessageClass.SUCCESS


def test_quota_total_is_486() -> None:
    server = Server(max_allocations_total=1)
    success(server.allocate())
    second = FakeClient(("198.51.100.2", 40000))
    assert error_code(server.allocate(client=second, user="bob")) == 486


def test_insufficient_capacity_is_508(server: Server) -> None:
    server.allocator.full = True
    assert error_code(server.allocate()) == 508
    assert not server.has_allocation()
    assert server.counters.allocations_active == 0


# -- Refresh (RFC 8656 §8) -----------------------------------------------------------------


def test_refresh_extends_the_allocation(server: Server) -> None:
    success(server.allocate())
    server.clock.advance(500)
    response = success(server.request(Method.REFRESH, [lifetime(600)]))
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == 600
    server.clock.advance(200)  # 700 s after the allocation: past its first lifetime
    server.manager.sweep()
    assert server.has_allocation()
    server.clock.advance(401)
    server.manager.sweep()
    assert not server.has_allocation()


def test_refresh_lifetime_zero_deletes(server: Server) -> None:
    success(server.allocate())
    relay = server.relay()
    response = success(server.request(Method.REFRESH, [lifetime(0)]))
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == 0
    assert not server.has_allocation()
    assert relay.closed
    deleted = [e for e in server.sink.events if e.kind is EventKind.DELETED]
    assert [e.end_reason for e in deleted] == ["refresh-0"]
    assert server.counters.allocations_active == 0


def test_refresh_without_allocation_is_437(server: Server) -> None:
    assert error_code(server.request(Method.REFRESH, [lifetime(600)])) == 437


def test_refresh_from_another_five_tuple_is_437(server: Server) -> None:
    success(server.allocate())
    other = FakeClient(("198.51.100.1", 40001))
    assert error_code(server.request(Method.REFRESH, [lifetime(0)], client=other)) == 437
    assert server.has_allocation()


@pytest.mark.parametrize(("requested", "granted"), [(10, 600), (1200, 1200), (99999, 3600)])
def test_refresh_lifetime_is_clamped(server: Server, requested: int, granted: int) -> None:
    success(server.allocate())
    response = success(server.request(Method.REFRESH, [lifetime(requested)]))
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == granted


def test_refresh_for_a_family_the_allocation_lacks_is_443(server: Server) -> None:
    success(server.allocate())
    family = (Attr.REQUESTED_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    assert error_code(server.request(Method.REFRESH, [family])) == 443


def test_refresh_with_other_users_credentials_is_441(server: Server) -> None:
    success(server.allocate())
    response = server.request(Method.REFRESH, [lifetime(0)], user="bob")
    assert error_code(response) == 441
    assert server.has_allocation()


def test_attribute_appended_after_integrity_cannot_end_an_allocation(server: Server) -> None:
    """LIFETIME 0 added on the path after MESSAGE-INTEGRITY is ignored (RFC 8489 §14.5)."""
    success(server.allocate())
    signed = server.signed(Method.REFRESH, [lifetime(600)])
    tampered = signed + b"\x00\x0d\x00\x04\x00\x00\x00\x00"
    tampered = tampered[:2] + (len(tampered) - 20).to_bytes(2, "big") + tampered[4:]
    response = decode(server.raw(tampered) or b"")
    assert attrs.unpack_uint32(response.get(Attr.LIFETIME) or b"") == 600
    assert server.has_allocation()


# -- CreatePermission (RFC 8656 §10) ---------------------------------------------------------


def test_create_permission_without_peer_is_400(server: Server) -> None:
    success(server.allocate())
    assert error_code(server.request(Method.CREATE_PERMISSION, [])) == 400


@pytest.mark.parametrize("peer", [("10.0.0.1", 5000), ("169.254.169.254", 80), ("127.0.0.1", 5000)])
def test_create_permission_for_denied_peer_is_403(server: Server, peer: Address) -> None:
    success(server.allocate())
    assert error_code(server.permit(peer)) == 403
    assert server.counters.peers_refused == 1
    assert server.allocation().permissions == {}


def test_create_permission_is_all_or_nothing(server: Server) -> None:
    success(server.allocate())
    assert error_code(server.permit(PEER, ("10.0.0.1", 1))) == 403
    assert server.allocation().permissions == {}


def test_create_permission_for_ipv6_peer_on_ipv4_allocation_is_443(server: Server) -> None:
    success(server.allocate())
    assert error_code(server.permit(PEER6)) == 443


def test_create_permission_for_several_peers(server: Server) -> None:
    success(server.allocate())
    success(server.permit(PEER, PEER2))
    assert set(server.allocation().permissions) == {PEER[0], PEER2[0]}
    server.send_indication(PEER, b"one")
    server.send_indication(PEER2, b"two")
    assert server.relay().sent == [(b"one", PEER), (b"two", PEER2)]


def test_create_permission_without_allocation_is_437(server: Server) -> None:
    assert error_code(server.permit(PEER)) == 437


# -- ChannelBind (RFC 8656 §11) --------------------------------------------------------------


@pytest.mark.parametrize("number", [0x4000, 0x4FFF, 0x5000, 0x7FFF])
def test_channel_bind_accepts_the_whole_range(server: Server, number: int) -> None:
    success(server.allocate())
    success(server.bind(number, PEER))
    assert server.allocation().channel_peers[number] == PEER


@pytest.mark.parametrize("number", [0x3FFF, 0x8000])
def test_channel_bind_outside_the_range_is_400(server: Server, number: int) -> None:
    success(server.allocate())
    assert error_code(server.bind(number, PEER)) == 400


def test_channel_rebound_to_another_peer_is_400(server: Server) -> None:
    success(server.allocate())
    success(server.bind(0x4000, PEER))
    assert error_code(server.bind(0x4000, PEER2)) == 400
    assert error_code(server.bind(0x4000, (PEER[0], PEER[1] + 1))) == 400


def test_peer_bound_to_a_second_channel_is_400(server: Server) -> None:
    success(server.allocate())
    success(server.bind(0x4000, PEER))
    assert error_code(server.bind(0x4001, PEER)) == 400


def test_channel_bind_refresh_of_same_binding(server: Server) -> None:
    success(server.allocate())
    success(server.bind(0x4000, PEER))
    success(server.bind(0x4000, PEER))


def test_channel_bind_ipv6_peer_on_ipv4_allocation_is_443(server: Server) -> None:
    success(server.allocate())
    assert error_code(server.bind(0x4000, PEER6)) == 443


def test_channel_bind_missing_attributes_or_denied_peer(server: Server) -> None:
    success(server.allocate())
    number = (Attr.CHANNEL_NUMBER, attrs.pack_channel_number(0x4000))
    assert error_code(server.request(Method.CHANNEL_BIND, [number])) == 400
    assert error_code(server.request(Method.CHANNEL_BIND, [xor_peer(PEER)])) == 400
    assert error_code(server.bind(0x4000, ("192.168.1.1", 5000))) == 403


# -- data: Send/Data indications, ChannelData (RFC 8656 §11, §12) ---------------------------


def test_send_indication_relays_to_a_permitted_peer(server: Server) -> None:
    success(server.allocate())
    server.send_indication(PEER, b"dropped: no permission yet")
    assert server.relay().sent == []
    success(server.permit(PEER))
    server.send_indication(PEER, b"hello")
    assert server.relay().sent == [(b"hello", PEER)]
    # Another port of the same peer IP is covered by the permission (RFC 8656 §9).
    server.send_indication((PEER[0], 9999), b"again")
    assert server.relay().sent[-1] == (b"again", (PEER[0], 9999))


def test_send_indication_without_allocation_is_dropped(server: Server) -> None:
    server.send_indication(PEER, b"hello")
    assert server.allocator.relays == []


def test_data_from_peer_without_channel_is_a_data_indication(server: Server) -> None:
    client = FakeClient()
    success(server.allocate(client=client))
    success(server.permit(PEER, client=client))
    server.relay().receive(b"from the peer", PEER)
    assert len(client.received) == 1
    indication = decode(client.received[0])
    assert (indication.method, indication.cls) == (Method.DATA, MessageClass.INDICATION)
    assert xor_attr(indication, Attr.XOR_PEER_ADDRESS) == PEER
    assert indication.get(Attr.DATA) == b"from the peer"


def test_data_from_peer_without_permission_is_dropped(server: Server) -> None:
    client = FakeClient()
    success(server.allocate(client=client))
    server.relay().receive(b"unsolicited", PEER)
    assert client.received == []


@pytest.mark.parametrize(
    ("stream", "expected"),
    [(False, b"\x40\x00\x00\x05hello"), (True, b"\x40\x00\x00\x05hello\x00\x00\x00")],
    ids=["udp", "tcp-padded"],
)
def test_data_from_peer_with_channel_is_channel_data(
    server: Server, stream: bool, expected: bytes
) -> None:
    client = FakeClient(stream=stream)
    success(server.allocate(client=client))
    success(server.bind(0x4000, PEER, client=client))
    server.relay().receive(b"hello", PEER)
    assert client.received == [expected]
    assert channel_data.decode(client.received[0]) == (0x4000, b"hello")
    # Another port of the same IP has no channel: Data indication.
    server.relay().receive(b"other", (PEER[0], PEER[1] + 1))
    assert decode(client.received[1]).get(Attr.DATA) == b"other"


# -- lifetimes on the manual clock ----------------------------------------------------------


def test_allocation_expires_after_its_lifetime(server: Server) -> None:
    success(server.allocate())
    relay = server.relay()
    server.clock.advance(599)
    server.manager.sweep()
    assert server.has_allocation()
    server.clock.advance(2)
    server.manager.sweep()
    assert not server.has_allocation()
    assert relay.closed
    assert [e.end_reason for e in server.sink.events if e.kind is EventKind.DELETED] == ["expired"]
    assert error_code(server.request(Method.REFRESH, [lifetime(600)])) == 437


def test_permission_expires_after_300_seconds(server: Server) -> None:
    success(server.allocate())
    success(server.permit(PEER))
    server.clock.advance(299)
    server.manager.sweep()
    server.send_indication(PEER, b"in time")
    server.clock.advance(2)
    server.manager.sweep()
    server.send_indication(PEER, b"too late")
    assert server.relay().sent == [(b"in time", PEER)]


def test_channel_expires_after_600_seconds(server: Server) -> None:
    client = FakeClient()
    success(server.allocate([lifetime(3600)], client=client))
    success(server.bind(0x4000, PEER, client=client))
    server.clock.advance(500)
    success(server.permit(PEER, client=client))  # keep the permission, not the channel
    server.clock.advance(99)
    server.manager.sweep()
    server.relay().receive(b"a", PEER)
    assert channel_data.is_channel_data(client.received[-1])
    server.clock.advance(2)
    server.manager.sweep()
    server.relay().receive(b"b", PEER)
    assert decode(client.received[-1]).get(Attr.DATA) == b"b"  # Data indication now
    assert 0x4000 not in server.allocation().channel_peers


def test_channel_bind_refresh_keeps_the_channel(server: Server) -> None:
    client = FakeClient()
    success(server.allocate([lifetime(3600)], client=client))
    success(server.bind(0x4000, PEER, client=client))
    server.clock.advance(500)
    success(server.bind(0x4000, PEER, client=client))
    server.clock.advance(200)  # 700 s: past the first binding's 600 s
    server.manager.sweep()
    server.relay().receive(b"a", PEER)
    assert client.received == [b"\x40\x00\x00\x01a"]


# -- robustness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01",
        b"\x00\x01\x00\x00garbage-not-a-cookie",
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12),
    ],
)
def test_malformed_bytes_are_dropped_and_counted(server: Server, data: bytes) -> None:
    assert server.raw(data) is None
    assert server.counters.malformed_dropped == 1


def test_responses_and_unknown_classes_are_not_answered(server: Server) -> None:
    tid = new_transaction_id()
    for cls in (MessageClass.SUCCESS, MessageClass.ERROR):
        assert server.raw(encode(build(Method.BINDING, cls, tid))) is None
    assert server.raw(encode(build(Method.DATA, MessageClass.INDICATION, tid))) is None


def test_binding_answers_with_the_client_address(server: Server) -> None:
    tid = new_transaction_id()
    response = decode(server.raw(encode(build(Method.BINDING, MessageClass.REQUEST, tid))) or b"")
    assert (response.cls, response.transaction_id) == (MessageClass.SUCCESS, tid)
    assert xor_attr(response, Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert server.counters.binding_requests == 1


def test_bandwidth_cap_drops_packets_beyond_the_rate() -> None:
    server = Server(max_bandwidth_per_allocation=1000)
    success(server.allocate())
    success(server.permit(PEER))
    for _ in range(3):
        server.send_indication(PEER, b"x" * 400)
    assert len(server.relay().sent) == 2  # 1000 bytes of burst: the third 400 does not fit
    server.clock.advance(1)
    server.send_indication(PEER, b"x" * 400)
    assert len(server.relay().sent) == 3
    assert server.allocation().dropped == 1


def test_sends_the_kernel_refuses_are_counted_in_both_directions(server: Server) -> None:
    refusals: list[Address] = []

    def refusing_sendto(data: bytes | memoryview, address: Address) -> None:
        refusals.append(address)
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    client = FakeClient(sendto=refusing_sendto)  # a UDP client: ChannelData goes by sendto
    success(server.allocate(client=client))
    success(server.bind(0x4000, PEER, client=client))
    relay = server.relay()
    relay.refuse = True
    server.send_indication(PEER, b"to the peer", client)
    relay.receive(b"to the client", PEER)

    assert relay.sent == [] and refusals == [CLIENT]
    assert server.counters.send_dropped == 2
    allocation = server.allocation(client)
    assert allocation.dropped == 2
    assert allocation.packets_to_peer == allocation.packets_to_client == 0


def test_bandwidth_cap_drops_are_counted_in_the_metric() -> None:
    server = Server(max_bandwidth_per_allocation=1000)
    success(server.allocate())
    success(server.permit(PEER))
    for _ in range(3):
        server.send_indication(PEER, b"x" * 400)
    assert server.counters.bandwidth_dropped == 1


ATTRIBUTE_TYPES = [
    Attr.LIFETIME,
    Attr.REQUESTED_TRANSPORT,
    Attr.XOR_PEER_ADDRESS,
    Attr.CHANNEL_NUMBER,
    Attr.EVEN_PORT,
    Attr.RESERVATION_TOKEN,
    Attr.REQUESTED_ADDRESS_FAMILY,
    Attr.ADDITIONAL_ADDRESS_FAMILY,
    Attr.DONT_FRAGMENT,
    Attr.DATA,
]


@given(
    st.sampled_from(
        [Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND]
    ),
    st.lists(st.tuples(st.sampled_from(ATTRIBUTE_TYPES), st.binary(max_size=24)), max_size=5),
)
@settings(max_examples=150, deadline=None)
def test_authenticated_garbage_values_get_an_answer_never_an_exception(
    method: int, items: list[tuple[int, bytes]]
) -> None:
    server = Server(FakeAllocator(ipv6=True))
    if method != Method.ALLOCATE:
        success(server.allocate())
    response = server.request(method, items)
    assert response.cls in (MessageClass.SUCCESS, MessageClass.ERROR)
    assert verify_integrity(response, ALICE_KEY)
