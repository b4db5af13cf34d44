"""Who may speak in a dialog (RFC 3261 §12.2.2, §26.1.4): the dialog's Call-ID and tags are not
enough; an in-dialog request must come from the party's signaling address, and a re-INVITE or a
BYE must be signed by the device credential that made the call (RFC 3261 §22)."""

from __future__ import annotations

from callgate.sip.credentials import Credential
from callgate.sip.dialog_party import same_party
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.outbound import OutboundCall
from callgate.sip.registrar import Binding
from callgate.sip.transport import Peer
from callgate.sip.trunks import Trunk


def credential(username: str) -> Credential:
    handle = username.split(".")[0]
    return Credential(username, handle, "desk", "callgate", "", "", False)


def invite() -> SipRequest:
    data = (
        "INVITE sip:bob@callgate SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa\r\n"
        "From: <sip:alice@callgate>;tag=1\r\nTo: <sip:bob@callgate>\r\nCall-ID: c1\r\n"
        "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_datagram(data.encode())
    assert isinstance(message, SipRequest)
    return message


def peer(ip: str, port: int = 5060) -> Peer:
    return Peer("UDP", (ip, port), lambda data, target: None)


async def noop(request: SipRequest, to: Peer) -> None:
    return None


async def test_a_phones_call_answers_only_its_phone() -> None:
    alice = credential("alice.desk")
    call = InboundCall(invite(), peer("198.51.100.7"), alice, lambda r: None, noop)
    # the phone itself, from another port of its address (NAT rebinding): BYE and re-INVITE,
    # signed; CANCEL and ACK cannot be challenged (RFC 3261 §9.2, §22.1): its address alone
    assert same_party(call, "BYE", "198.51.100.7", alice)
    assert same_party(call, "INVITE", "198.51.100.7", alice)
    assert same_party(call, "CANCEL", "198.51.100.7", None)
    assert not same_party(call, "BYE", "198.51.100.7", None)
    assert not same_party(call, "BYE", "198.51.100.7", credential("bob.desk"))
    # a key press by INFO likewise: another device behind the same address cannot sign it
    assert same_party(call, "INFO", "198.51.100.7", alice)
    assert not same_party(call, "INFO", "198.51.100.7", credential("bob.desk"))
    # anyone else who knows the dialog's identifiers
    assert not same_party(call, "BYE", "198.51.100.8", None)
    assert not same_party(call, "CANCEL", "203.0.113.9", None)
    # another device of the same site (same address), or alice's phone unsigned
    assert not same_party(call, "INVITE", "198.51.100.7", credential("bob.desk"))
    assert not same_party(call, "INVITE", "198.51.100.7", None)
    # the right credential from the wrong address
    assert not same_party(call, "INVITE", "198.51.100.8", alice)


async def test_trunk_calls_answer_only_the_trunks_addresses() -> None:
    trunk = Trunk("carrier", frozenset({"192.0.2.20", "192.0.2.21"}), outbound=("192.0.2.30", 5060))
    inbound = InboundCall(invite(), peer("192.0.2.20"), None, lambda r: None, noop, trunk)
    assert same_party(inbound, "BYE", "192.0.2.21", None)  # its other signaling address
    assert same_party(inbound, "INVITE", "192.0.2.20", None)
    assert not same_party(inbound, "BYE", "192.0.2.99", None)
    assert not same_party(inbound, "INVITE", "198.51.100.7", credential("alice.desk"))

    target = Binding("+442079460000", "trunk:carrier", "sip:+442079460000@192.0.2.30:5060",
                     peer("192.0.2.30"), 0.0, "", 0)  # fmt: skip
    out = OutboundCall(target, "alice", "callgate", lambda k, f: lambda: None, lambda r, p: None,
                       noop)  # fmt: skip
    assert same_party(out, "BYE", "192.0.2.30", None, trunk)  # its outbound host
    assert same_party(out, "BYE", "192.0.2.21", None, trunk)
    assert not same_party(out, "BYE", "203.0.113.9", None, trunk)


async def test_a_call_to_a_phone_answers_only_that_phone() -> None:
    binding = Binding("bob", "bob.desk", "sip:bob@198.51.100.7:5062", peer("198.51.100.7", 5062),
                      0.0, "r1", 1)  # fmt: skip
    out = OutboundCall(binding, "alice", "callgate", lambda k, f: lambda: None, lambda r, p: None,
                       noop)  # fmt: skip
    assert same_party(out, "BYE", "198.51.100.7", credential("bob.desk"))
    assert same_party(out, "INVITE", "198.51.100.7", credential("bob.desk"))
    assert not same_party(out, "BYE", "198.51.100.7", None)
    assert not same_party(out, "INVITE", "198.51.100.7", credential("carol.desk"))
    assert not same_party(out, "BYE", "198.51.100.9", None)
