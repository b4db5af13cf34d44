"""SIP Outbound keep-alives (RFC 5626): a phone behind NAT is told to send them, and they are
answered. The registrar answers `Require: outbound` and `Flow-Timer` only to a REGISTER that asks
for Outbound (§4.2, §6); the UDP listener answers a STUN Binding request with the address the
phone's packets came from (§4.4.2, §8), over a real socket, and counts it."""

from __future__ import annotations

import asyncio
import socket

from callgate.sip.credentials import Credential
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.registrar import Registrar
from callgate.sip.transport import Counters, Peer, UdpTransport, stun_keepalive_reply
from callgate.stun.attributes import unpack_xor_address
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import build, decode, encode, new_transaction_id

ALICE = Credential("alice.desk", "alice", "desk", "callgate", "", "", False)
INSTANCE = '+sip.instance="<urn:uuid:462083db-934e-8189-db00-bf84a8b4befb>"'


def register(contact_params: str, supported: str | None) -> SipRequest:
    lines = [
        "REGISTER sip:callgate SIP/2.0",
        "Via: SIP/2.0/UDP 10.34.0.10:5060;branch=z9hG4bKr1;rport",
        "From: <sip:alice@callgate>;tag=1",
        "To: <sip:alice@callgate>",
        "Call-ID: reg-1",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:alice@10.34.0.10:5060>;expires=600{contact_params}",
        *([f"Supported: {supported}"] if supported else []),
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    message = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


def flow() -> Peer:
    return Peer("UDP", ("198.51.100.34", 40123), lambda data, target: None)


def test_a_phone_asking_for_outbound_is_told_how_often_to_keep_its_flow_alive() -> None:
    registrar = Registrar(flow_timer=20)
    request = register(f";{INSTANCE};reg-id=1", "gruu, outbound, path")
    outcome = registrar.register(request, ALICE, flow(), now=0.0)
    assert outcome.status == 200
    headers = dict(outcome.headers[:2])
    assert headers == {"Require": "outbound", "Flow-Timer": "20"}
    # the binding is the NAT's mapping, where INVITEs to the phone go
    (binding,) = registrar.bindings(1.0, "alice")
    assert binding.peer.address == ("198.51.100.34", 40123)


def test_outbound_is_not_required_of_a_phone_that_did_not_ask_for_it() -> None:
    for params, supported in (
        (f";{INSTANCE};reg-id=1", None),  # does not support it
        (f";{INSTANCE}", "outbound"),  # no reg-id: not an Outbound registration (§4.2)
        (";reg-id=1", "outbound"),  # no instance id
    ):
        outcome = Registrar().register(register(params, supported), ALICE, flow(), now=0.0)
        assert outcome.status == 200
        names = {name.lower() for name, _ in outcome.headers}
        assert "require" not in names and "flow-timer" not in names, (params, supported)


def test_a_stun_keepalive_gets_the_mapped_address_and_nothing_else_is_answered() -> None:
    tid = new_transaction_id()
    request = encode(build(Method.BINDING, MessageClass.REQUEST, tid))
    reply = stun_keepalive_reply(request, ("198.51.100.34", 40123))
    assert reply is not None and len(reply) == 32
    answer = decode(reply)
    assert (answer.method, answer.cls, answer.transaction_id) == (
        Method.BINDING,
        MessageClass.SUCCESS,
        tid,
    )
    mapped = answer.get(Attr.XOR_MAPPED_ADDRESS)
    assert mapped is not None and unpack_xor_address(mapped, tid) == ("198.51.100.34", 40123)
    indication = encode(build(Method.BINDING, MessageClass.INDICATION, tid))
    assert stun_keepalive_reply(indication, ("198.51.100.34", 1)) is None
    allocate = encode(build(Method.ALLOCATE, MessageClass.REQUEST, tid))
    assert stun_keepalive_reply(allocate, ("198.51.100.34", 1)) is None
    assert (
        stun_keepalive_reply(request + b"\x00\x00\x00\x00", ("198.51.100.34", 1)) is None
    )  # length


async def test_the_sip_udp_socket_answers_stun_and_crlf_keepalives() -> None:
    counters = Counters()
    dispatched: list[object] = []
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: UdpTransport(lambda message, peer: dispatched.append(message), counters),
        local_addr=("127.0.0.1", 0),
    )
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.setblocking(False)
    try:
        phone.bind(("127.0.0.1", 0))
        server = transport.get_extra_info("sockname")[:2]
        tid = new_transaction_id()
        await loop.sock_sendto(phone, encode(build(Method.BINDING, MessageClass.REQUEST, tid)),
                               server)  # fmt: skip
        reply = decode(await asyncio.wait_for(loop.sock_recv(phone, 2048), 10))
        mapped = reply.get(Attr.XOR_MAPPED_ADDRESS)
        assert mapped is not None
        assert unpack_xor_address(mapped, tid) == phone.getsockname()
        await loop.sock_sendto(phone, b"\r\n\r\n", server)
        assert await asyncio.wait_for(loop.sock_recv(phone, 2048), 10) == b"\r\n"
        assert counters.keepalives == 2
        assert counters.received == 0 and counters.malformed == 0 and not dispatched
    finally:
        phone.close()
        transport.close()
