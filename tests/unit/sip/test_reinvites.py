"""The SIP side of a re-INVITE in an answered call (sip/reinvites.py), without sockets: 200 with
our SDP, 488 with the reason (and Warning) leaving the session as it was, 491 only while an
offer of ours is outstanding (RFC 3261 §14.2, RFC 3264 §4); session timers (RFC 4028,
sip/session_timers.py): what a request asks for, and the BYE when no refresh comes."""

from __future__ import annotations

import asyncio

import pytest

from callgate.sip.invite import InboundCall
from callgate.sip.media_peers import ForbiddenMedia
from callgate.sip.message import Headers, SipRequest, SipResponse
from callgate.sip.reinvites import EXPIRED, MAX_REINVITES, PARTY_LOST, Reinvites
from callgate.sip.sdp import SdpError
from callgate.sip.session_timers import SessionTimer, TimerError, session_timer
from callgate.sip.transport import Peer

OURS = b"v=0\r\no=callgate 1 2 IN IP4 127.0.0.1\r\n"


def request(method: str, cseq: int, body: bytes = b"", *extra: tuple[str, str]) -> SipRequest:
    headers = Headers()
    headers.add("via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx")
    headers.add("from", "<sip:alice@callgate>;tag=a")
    headers.add("to", "<sip:bob@callgate>;tag=b")
    headers.add("call-id", "c1")
    headers.add("cseq", f"{cseq} {method}")
    for name, value in extra:
        headers.add(name, value)
    return SipRequest(method, "sip:callgate@127.0.0.1", headers, body)


async def expire(why: str) -> None:
    raise AssertionError(f"nothing should end the call ({why})")


def answer(body: bytes) -> bytes:
    if b"forbidden" in body:
        raise ForbiddenMedia("media may not go to 169.254.169.254")
    if b"video" in body:
        raise SdpError("No audio stream")
    return OURS


async def test_an_offerless_reinvite_holds_our_offer_until_its_ack() -> None:
    reinvites = Reinvites(asyncio.Event(), expire)
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


async def test_a_refused_offer_is_488_with_its_reason_and_warning() -> None:
    reinvites = Reinvites(asyncio.Event(), expire)
    forbidden = reinvites.answer(request("INVITE", 2, b"forbidden"), answer, "sip:c@h", "t1")
    assert forbidden.status == 488 and forbidden.headers.get("warning")
    assert "tag=b" in (forbidden.headers.get("to") or "")  # the dialog's tag, not a new one
    video = reinvites.answer(request("INVITE", 3, b"video"), answer, "sip:c@h", None)
    assert (video.status, video.reason) == (488, "Not Acceptable Here (No audio stream)")
    assert video.headers.get("warning") is None
    # a call whose handler takes no re-INVITEs: 488, never 491
    assert reinvites.answer(request("INVITE", 4, b"v=0"), None, "sip:c@h", None).status == 488


TIMER = ("Supported", "timer")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([TIMER, ("Session-Expires", "1800")], 1800),
        ([TIMER, ("Session-Expires", "1800;refresher=uac"), ("Min-SE", "120")], 1800),
        ([("Require", "timer"), ("Session-Expires", "90")], 90),
        ([TIMER, ("Session-Expires", "999999")], 86400),  # shortened to a day
        ([TIMER, ("Session-Expires", "1800;refresher=uas")], None),  # we never refresh
        ([("Session-Expires", "1800")], None),  # the party lacks timer: we would refresh
        ([TIMER], None),
        ([], None),
    ],
)
def test_what_a_request_asks_for(headers: list[tuple[str, str]], expected: int | None) -> None:
    timer = session_timer(request("INVITE", 1, b"", *headers))
    assert (timer.interval if timer else None) == expected
    if timer is not None:
        assert timer.headers == [
            ("Session-Expires", f"{expected};refresher=uac"), ("Require", "timer")
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([TIMER, ("Session-Expires", "89")], 422),  # below ours (RFC 4028 §4: 90)
        ([TIMER, ("Session-Expires", "100"), ("Min-SE", "120")], 422),  # below its own
        ([TIMER, ("Session-Expires", "soon")], 400),
        ([TIMER, ("Session-Expires", "1800"), ("Min-SE", "-1")], 400),
    ],
)
def test_a_session_interval_refused(headers: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(TimerError) as refused:
        session_timer(request("INVITE", 1, b"", *headers))
    assert refused.value.status == status
    assert refused.value.headers == ([("Min-SE", "90")] if status == 422 else [])


async def test_a_refresh_is_answered_with_the_timer_and_none_ends_the_call() -> None:
    """A re-INVITE asking for a timer gets it in the 200; one below Min-SE 422 and changes
    nothing; with no refresh before the watch ends (RFC 4028 §10), the call is ended."""
    ended, expired = asyncio.Event(), asyncio.Event()

    async def bye(why: str) -> None:
        assert why == EXPIRED
        expired.set()
        ended.set()

    reinvites = Reinvites(ended, bye)
    asked = request("INVITE", 2, b"v=0", TIMER, ("Session-Expires", "1800"))
    ok = reinvites.answer(asked, answer, "sip:c@h", None)
    assert (ok.status, ok.headers.get("session-expires")) == (200, "1800;refresher=uac")
    assert ok.headers.get("require") == "timer"
    short = request("INVITE", 3, b"v=0", TIMER, ("Session-Expires", "30"))
    refused = reinvites.answer(short, answer, "sip:c@h", None)
    assert (refused.status, refused.headers.get("min-se")) == (422, "90")
    assert reinvites.timer == SessionTimer(1800)  # unchanged by the refused one
    reinvites.refreshed(SessionTimer(1))  # (an interval below Min-SE: the watch alone)
    await asyncio.wait_for(expired.wait(), 30)
    assert SessionTimer(1800).watch == 1800 - 32 and SessionTimer(90).watch == 60


async def test_an_expired_session_is_ended_with_bye() -> None:
    """The watch of a call's session timer ends it the way we end calls: BYE to the party, the
    call `ended` by `session-expired` (which the call handlers pass on, runtime/)."""
    sent: list[SipRequest] = []

    async def send_request(request: SipRequest, peer: Peer) -> None:
        sent.append(request)

    invite = request("INVITE", 1, b"v=0", TIMER, ("Session-Expires", "90"))
    invite.headers.add("contact", "<sip:alice@127.0.0.1:5062>")
    peer = Peer("UDP", ("127.0.0.1", 5062), lambda data, to: None, ("127.0.0.1", 5060))
    replies: list[SipResponse] = []
    call = InboundCall(invite, peer, None, replies.append, send_request)
    call.accept(b"v=0", "sip:callgate@127.0.0.1:5060")
    ok = call.final.result()
    assert ok.headers.get("session-expires") == "90;refresher=uac"
    call.reinvites.refreshed(SessionTimer(1))  # the watch, shortened
    await asyncio.wait_for(call.ended.wait(), 30)
    while not sent:
        await asyncio.sleep(0.01)
    assert [r.method for r in sent] == ["BYE"] and call.ended_by == EXPIRED
    call.close()


@pytest.fixture
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """T1 10 ms (T2 40 ms, 64·T1 0.64 s): the schedule of RFC 3261 §13.3.1.4, quicker."""
    monkeypatch.setattr("callgate.sip.reinvites.T1", 0.01)
    monkeypatch.setattr("callgate.sip.reinvites.T2", 0.04)
    monkeypatch.setattr("callgate.sip.reinvites.TIMEOUT", 0.64)


@pytest.mark.usefixtures("fast_timers")
async def test_our_2xx_is_retransmitted_until_the_ack() -> None:
    """RFC 3261 §13.3.1.4: over UDP our 2xx to a re-INVITE goes again (T1 doubling to T2)
    until its ACK; then no more, and the call goes on."""
    resent: list[int] = []
    reinvites = Reinvites(asyncio.Event(), expire)
    reinvite = request("INVITE", 2)
    assert reinvites.answer(reinvite, answer, "sip:c@h", None).status == 200
    reinvites.sent(reinvite, lambda: resent.append(1))
    async with asyncio.timeout(30):
        while len(resent) < 3:
            await asyncio.sleep(0.01)
    reinvites.acked(request("ACK", 2))
    count = len(resent)
    await asyncio.sleep(1.0)  # past 64·T1: no more, and `expire` (the end) never called
    assert len(resent) == count and reinvites.offered is None
    reinvites.close()


@pytest.mark.usefixtures("fast_timers")
async def test_a_2xx_never_acked_ends_the_call_and_frees_the_next_reinvite() -> None:
    """No ACK after 64·T1 (lost, or the party is gone): our offer is no longer outstanding (a
    later re-INVITE is not 491) and the call is ended, BYE, `party-lost` (§13.3.1.4)."""
    ended, why = asyncio.Event(), []

    async def bye(reason: str) -> None:
        why.append(reason)
        ended.set()

    reinvites = Reinvites(ended, bye)
    offerless = request("INVITE", 2)  # our offer in the 200: 491 until its ACK
    assert reinvites.answer(offerless, answer, "sip:c@h", None).status == 200
    reinvites.sent(offerless, None)  # TCP: not resent, the ACK still awaited
    assert reinvites.answer(request("INVITE", 3, b"v=0"), answer, "sip:c@h", None).status == 491
    await asyncio.wait_for(ended.wait(), 30)
    assert why == [PARTY_LOST] and reinvites.offered is None
    reinvites.close()


async def test_a_closed_call_stops_its_session_watch() -> None:
    """The call handler is done (the call ended): its session timer's watch stops with it and
    never sends a BYE for the call that is gone."""
    ends: list[str] = []

    async def bye(why: str) -> None:
        ends.append(why)

    reinvites = Reinvites(asyncio.Event(), bye)
    reinvites.refreshed(SessionTimer(1))  # the watch would end the call after 0.67 s
    reinvites.close()
    await asyncio.sleep(1.5)
    assert ends == []


@pytest.mark.parametrize("value", ["\u00b2", "1\u0663", "99999999999"])
def test_a_session_interval_that_is_not_ascii_digits_is_400(value: str) -> None:
    """`²` and other Unicode digits pass str.isdigit() but are no delta-seconds (RFC 4028 §4:
    1*DIGIT, ASCII): 400, not a crash (500)."""
    for headers in ([TIMER, ("Session-Expires", value)],
                    [TIMER, ("Session-Expires", "1800"), ("Min-SE", value)]):  # fmt: skip
        with pytest.raises(TimerError) as refused:
            session_timer(request("INVITE", 1, b"", *headers))
        assert refused.value.status == 400


def test_a_min_se_above_our_longest_interval_is_400() -> None:
    """A Min-SE above a day would make us watch longer than we ever do (MAX_SE): refused."""
    headers = [TIMER, ("Session-Expires", "999999999"), ("Min-SE", "999999999")]
    with pytest.raises(TimerError) as refused:
        session_timer(request("INVITE", 1, b"", *headers))
    assert refused.value.status == 400


async def test_our_2xx_is_retransmitted_over_tcp_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 3261 §13.3.1.4: the UAS retransmits its 2xx on every transport (a proxy's later hop
    may be UDP), the INVITE's as a re-INVITE's, until the ACK."""
    monkeypatch.setattr("callgate.sip.invite.T1", 0.01)
    monkeypatch.setattr("callgate.sip.invite.T2", 0.04)

    async def send_request(request: SipRequest, peer: Peer) -> None:
        pass

    invite = request("INVITE", 1, b"v=0")
    invite.headers.add("contact", "<sip:alice@127.0.0.1:5062>")
    peer = Peer("TCP", ("127.0.0.1", 5062), lambda data, to: None, ("127.0.0.1", 5060))
    replies: list[SipResponse] = []
    call = InboundCall(invite, peer, None, replies.append, send_request)
    call.accept(b"v=0", "sip:callgate@127.0.0.1:5060")
    async with asyncio.timeout(30):
        while len(replies) < 2:
            await asyncio.sleep(0.01)
    assert {reply.status for reply in replies} == {200}
    call.acked.set()
    call.close()


async def test_one_unacked_2xx_per_dialog_and_cseqs_in_order() -> None:
    """While our 2xx to a re-INVITE is not ACKed another gets 500 with Retry-After (RFC 3261
    §14.2), not a second 2xx retransmitted alongside; a CSeq not above the last re-INVITE's is
    500 (§12.2.2)."""
    reinvites = Reinvites(asyncio.Event(), expire)
    first = request("INVITE", 5, b"v=0")
    assert reinvites.answer(first, answer, "sip:c@h", None).status == 200
    reinvites.sent(first, lambda: None)
    second = reinvites.answer(request("INVITE", 6, b"v=0"), answer, "sip:c@h", None)
    assert second.status == 500 and 0 <= int(second.headers.get("retry-after") or "") <= 10
    reinvites.acked(request("ACK", 5))
    assert reinvites.answer(request("INVITE", 7, b"v=0"), answer, "sip:c@h", None).status == 200
    reinvites.acked(request("ACK", 7))
    for stale in (7, 3):
        old = reinvites.answer(request("INVITE", stale, b"v=0"), answer, "sip:c@h", None)
        assert (old.status, old.reason) == (500, "Server Internal Error (CSeq out of order)")
    assert reinvites.answer(request("INVITE", 8, b"v=0"), answer, "sip:c@h", None).status == 200
    reinvites.close()


async def test_re_invites_beyond_the_per_call_rate_are_refused_and_counted() -> None:
    reinvites = Reinvites(asyncio.Event(), expire)
    statuses = [
        reinvites.answer(request("INVITE", n, b"v=0"), answer, "sip:c@h", None).status
        for n in range(2, 2 + MAX_REINVITES + 3)
    ]
    assert statuses == [200] * MAX_REINVITES + [500] * 3 and reinvites.limited == 3
    reinvites.close()


@pytest.mark.usefixtures("fast_timers")
async def test_the_bye_of_an_unacked_2xx_is_kept_for_the_edge_to_await() -> None:
    """`_ending`'s BYE survives the call's close (it is not one of the call's tasks) and stays
    in `endings` (the edge's set, awaited with a timeout by `SipEdge.close`) until it is done:
    never a task destroyed while pending."""
    ended, answered, byes = asyncio.Event(), asyncio.Event(), []

    async def bye(reason: str) -> None:
        byes.append(reason)
        ended.set()
        await answered.wait()  # its transaction

    endings: set[asyncio.Task[None]] = set()
    reinvites = Reinvites(ended, bye)
    reinvites.endings = endings
    offered = request("INVITE", 2, b"v=0")
    assert reinvites.answer(offered, answer, "sip:c@h", None).status == 200
    reinvites.sent(offered, lambda: None)
    await asyncio.wait_for(ended.wait(), 30)
    reinvites.close()  # the call handler is done
    (task,) = endings
    await asyncio.sleep(0.05)
    assert byes == [PARTY_LOST] and not task.done()
    answered.set()
    await asyncio.wait_for(task, 30)
    assert not endings
