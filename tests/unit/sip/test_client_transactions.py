"""Our client transactions match responses by branch and CSeq method (RFC 3261 §17.1.3): a
CANCEL shares its INVITE's branch, and the INVITE's 487 must still reach the INVITE after the
CANCEL's 200 ended the CANCEL transaction. And only from where the request went: a response
with the right branch from another address is dropped."""

from __future__ import annotations

import asyncio

from callgate.sip.client import ClientTransactions
from callgate.sip.message import Headers, SipRequest, SipResponse
from callgate.sip.transport import Peer


def reply(status: int, method: str) -> SipResponse:
    headers = Headers()
    headers.add("via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc")
    headers.add("cseq", f"1 {method}")
    return SipResponse(status, "", headers)


async def test_a_cancel_and_its_invite_each_get_their_own_final() -> None:
    clients = ClientTransactions()
    to_invite: list[int] = []
    phone = ("192.0.2.9", 5060)
    forget_invite = clients.register(
        "z9hG4bKabc", lambda r: to_invite.append(r.status), "INVITE", phone
    )
    sent: list[bytes] = []
    peer = Peer("UDP", phone, lambda data, target: sent.append(data))
    headers = Headers()
    headers.add("via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc")
    headers.add("cseq", "1 CANCEL")
    cancel = asyncio.ensure_future(
        clients.send_request(SipRequest("CANCEL", "sip:x", headers), peer)
    )
    await asyncio.sleep(0)
    assert sent  # the CANCEL went out
    clients.response(reply(180, "INVITE"), phone)
    clients.response(reply(200, "CANCEL"), ("192.0.2.9", 5061))  # spoofed: another port
    clients.response(reply(486, "INVITE"), ("192.0.2.66", 5060))  # spoofed: another host
    assert not cancel.done() and to_invite == [180] and clients.wrong_source == 2
    clients.response(reply(200, "CANCEL"), phone)
    answered = await cancel
    assert answered is not None and answered.status == 200
    clients.response(reply(487, "INVITE"), phone)  # after the CANCEL's transaction ended
    assert to_invite == [180, 487]
    forget_invite()
    clients.response(reply(487, "INVITE"), phone)  # nobody waits now: dropped
    assert to_invite == [180, 487]
