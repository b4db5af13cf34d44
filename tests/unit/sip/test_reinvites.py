"""The SIP side of a re-INVITE in an answered call (sip/reinvites.py), without sockets: 200 with
our SDP, 488 with the reason (and Warning) leaving the session as it was, and 491 only while an
offer of ours is outstanding (RFC 3261 §14.2, RFC 3264 §4)."""

from __future__ import annotations

from callgate.sip.media_peers import ForbiddenMedia
from callgate.sip.message import Headers, SipRequest
from callgate.sip.reinvites import Reinvites
from callgate.sip.sdp import SdpError

OURS = b"v=0\r\no=callgate 1 2 IN IP4 127.0.0.1\r\n"


def request(method: str, cseq: int, body: bytes = b"") -> SipRequest:
    headers = Headers()
    headers.add("via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx")
    headers.add("from", "<sip:alice@callgate>;tag=a")
    headers.add("to", "<sip:bob@callgate>;tag=b")
    headers.add("call-id", "c1")
    headers.add("cseq", f"{cseq} {method}")
    return SipRequest(method, "sip:callgate@127.0.0.1", headers, body)


def answer(body: bytes) -> bytes:
    if b"forbidden" in body:
        raise ForbiddenMedia("media may not go to 169.254.169.254")
    if b"video" in body:
        raise SdpError("No audio stream")
    return OURS


def test_an_offerless_reinvite_holds_our_offer_until_its_ack() -> None:
    reinvites = Reinvites()
    offered = reinvites.answer(request("INVITE", 2), answer, "sip:callgate@127.0.0.1", None)
    assert (offered.status, offered.body) == (200, OURS)
    assert offered.headers.get("contact") == "<sip:callgate@127.0.0.1>"
    # our offer is outstanding: another re-INVITE meanwhile is 491, changing nothing
    crossing = reinvites.answer(request("INVITE", 3, b"v=0"), answer, "sip:c@h", None)
    assert (crossing.status, crossing.reason) == (491, "Request Pending")
    reinvites.acked(request("ACK", 3))  # the ACK of the 491 answers nothing
    assert reinvites.answer(request("INVITE", 4, b"v=0"), answer, "sip:c@h", None).status == 491
    reinvites.acked(request("ACK", 2, b"v=0 answer"))
    assert reinvites.answer(request("INVITE", 5, b"v=0"), answer, "sip:c@h", None).status == 200


def test_a_refused_offer_is_488_with_its_reason_and_warning() -> None:
    reinvites = Reinvites()
    forbidden = reinvites.answer(request("INVITE", 2, b"forbidden"), answer, "sip:c@h", "t1")
    assert forbidden.status == 488 and forbidden.headers.get("warning")
    assert "tag=b" in (forbidden.headers.get("to") or "")  # the dialog's tag, not a new one
    video = reinvites.answer(request("INVITE", 3, b"video"), answer, "sip:c@h", None)
    assert (video.status, video.reason) == (488, "Not Acceptable Here (No audio stream)")
    assert video.headers.get("warning") is None
    # a call whose handler takes no re-INVITEs: 488, never 491
    assert reinvites.answer(request("INVITE", 4, b"v=0"), None, "sip:c@h", None).status == 488
