"""An INVITE from us to a registered phone: the user agent client side (RFC 3261 §13.2, §17.1.1).

`OutboundCall.invite()` sends the INVITE over the flow the phone registered on and yields its
responses; the INVITE is retransmitted over UDP every T1, doubling (Timer A), until a response
comes, and given up after 64·T1 without one (Timer B). A final non-2xx is acknowledged in the
transaction (§17.1.1.3), a 2xx with a new ACK request (§13.2.2.4). `cancel()` sends CANCEL
(§9.1) while no final response came; `hang_up()` BYE once answered. The phone's BYE arrives as
`ended`, as for an inbound call.

Towards a carrier with credentials (`auth`), a `401`/`407` to the INVITE is acknowledged and the
INVITE sent again with the next CSeq and the answer to the challenge (RFC 3261 §22.2, §22.3;
digest_client.py); a second challenge is answered only when it says `stale=true`, otherwise it
is the final response (wrong credentials).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from callgate.sip.digest_client import CarrierAuth, authorization, choose
from callgate.sip.message import Headers, SipRequest, SipResponse
from callgate.sip.registrar import Binding
from callgate.sip.reinvites import OnOffer, Reinvites
from callgate.sip.timers import T1, T2, TIMEOUT
from callgate.sip.transport import Peer

# RFC 3326 §2 with the cause RFC 3261 §21.2.1 (200 OK) and the text phones show for it: the
# call was answered on another device, so a phone does not list it as missed.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'

# (branch, callback, method, the address responses must come from) -> forget (client.py)
Register = Callable[
    [str, Callable[[SipResponse], None], str, tuple[str, int] | None], Callable[[], None]
]
SendRequest = Callable[[SipRequest, Peer], Awaitable[SipResponse | None]]
Send = Callable[[SipRequest, Peer], None]


class OutboundCall:
    def __init__(
        self,
        binding: Binding,
        caller: str,
        realm: str,
        register: Register,
        send: Send,
        send_request: SendRequest,
    ) -> None:
        self.binding = binding
        self.peer: Peer = binding.peer
        self.call_id = secrets.token_hex(12) + "@callgate"
        self.from_tag = secrets.token_hex(6)
        self.to_header = f"<sip:{binding.handle}@{realm}>"  # gets the phone's tag
        self.from_header = f"<sip:{caller}@{realm}>;tag={self.from_tag}"
        self.ended = asyncio.Event()
        self.ended_by = ""
        self.answered = False
        self._register = register
        self._send = send
        self._send_request = send_request
        self._cseq = 1
        self._invite: SipRequest | None = None
        self._final = False
        self.auth: CarrierAuth | None = None  # our account at a carrier (SipEdge.dial)
        # a key the phone sent by INFO (key, ms) → whether it was taken (sip/dtmf_info.py)
        self.on_key: Callable[[str, int], bool] | None = None
        self.forged = 0  # in-dialog requests refused as not a party's (edge_dialogs.py)
        # the party's re-INVITE SDP → ours (SdpError: 488); set by the call handler
        self.on_offer: OnOffer | None = None
        self.reinvites = Reinvites(self.ended, self.hang_up)
        self.contact = ""  # ours, as our INVITE gave it

    def _request(self, method: str, cseq: int, branch: str | None = None) -> SipRequest:
        host, port = self.peer.local
        headers = Headers()
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        headers.add("via", f"SIP/2.0/{self.peer.transport} {host}:{port};branch={branch};rport")
        headers.add("max-forwards", "70")
        headers.add("from", self.from_header)
        headers.add("to", self.to_header)
        headers.add("call-id", self.call_id)
        headers.add("cseq", f"{cseq} {method}")
        return SipRequest(method, self.binding.contact, headers)

    async def invite(self, sdp: bytes, contact: str) -> AsyncIterator[SipResponse]:
        """Send the INVITE; yield each response until the final one (or none: Timer B). A
        digest challenge is answered (module doc), not yielded."""
        to_header, answered, auth = self.to_header, 0, self.auth
        self.contact = contact
        credentials: tuple[str, str] | None = None
        while True:
            request = self._request("INVITE", self._cseq)
            request.headers.add("contact", f"<{contact}>")
            request.headers.add("content-type", "application/sdp")
            if credentials is not None:
                request.headers.add(*credentials)
            request.body = sdp
            challenged: SipResponse | None = None
            async for reply in self._transaction(request):
                if reply.status in (401, 407) and auth is not None:
                    challenged = reply  # the final response: the transaction ends here
                    continue
                yield reply
            if challenged is None or auth is None:
                return
            header = "www-authenticate" if challenged.status == 401 else "proxy-authenticate"
            challenge = choose(challenged.headers.all(header))
            if challenge is None or (answered and not challenge.stale) or answered >= 2:
                yield challenged  # wrong credentials, or a challenge we cannot answer
                return
            answered += 1
            name = "authorization" if challenged.status == 401 else "proxy-authorization"
            value = authorization(challenge, auth, "INVITE", request.uri)
            credentials = (name, value)
            self.to_header = to_header  # a new request outside any dialog (§22.2)
            self._final = False
            self._cseq += 1

    async def _transaction(self, request: SipRequest) -> AsyncIterator[SipResponse]:
        """One INVITE client transaction (§17.1.1): its responses up to the final one."""
        self._invite = request
        branch = request.headers.all("via")[0].split("branch=")[1].split(";")[0]
        responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        forget = self._register(branch, responses.put_nowait, "INVITE", self.peer.address)
        try:
            interval, waited, provisional = T1, 0.0, False
            self._send(request, self.peer)
            while waited < TIMEOUT or provisional:
                try:
                    reply = await asyncio.wait_for(responses.get(), interval)
                except TimeoutError:
                    waited += interval
                    if not provisional and self.peer.transport == "UDP":
                        interval = min(interval * 2, T2)
                        self._send(request, self.peer)
                    continue
                if reply.status < 200:
                    provisional = True
                    yield reply
                    continue
                self._final = True
                self._ack(reply, branch)
                yield reply
                return
        finally:
            forget()

    def _ack(self, reply: SipResponse, branch: str) -> None:
        self.to_header = reply.headers.get("to") or self.to_header
        if 200 <= reply.status < 300:
            self.answered = True
            ack = self._request("ACK", self._cseq)  # a new transaction (§13.2.2.4)
        else:
            ack = self._request("ACK", self._cseq, branch)  # in the transaction (§17.1.1.3)
        self._send(ack, self.peer)

    async def cancel(self, reason: str | None = None) -> None:
        """Stop ringing the phone (§9.1): CANCEL in the INVITE's transaction, with a `Reason`
        header when given (RFC 3326 §2: `COMPLETED_ELSEWHERE` when another device answered)."""
        if self._invite is None or self._final:
            return
        branch = self._invite.headers.all("via")[0].split("branch=")[1].split(";")[0]
        request = self._request("CANCEL", self._cseq, branch)
        if reason is not None:
            request.headers.add("reason", reason)
        await self._send_request(request, self.peer)

    async def hang_up(self, by: str = "us") -> None:
        """BYE once answered; `by`: why (`EXPIRED`: the party's session timer ran out)."""
        if not self.answered or self.ended.is_set():
            return
        self.ended.set()
        self.ended_by = by
        self._cseq += 1
        await self._send_request(self._request("BYE", self._cseq), self.peer)

    async def probe(self) -> int | None:
        """OPTIONS in the dialog (RFC 3261 §11): the party's final status, None when none came
        (Timer F) (runtime/sip_quiet.py asks a party that holds the call)."""
        self._cseq += 1
        reply = await self._send_request(self._request("OPTIONS", self._cseq), self.peer)
        return None if reply is None else reply.status

    def reoffer(self, request: SipRequest) -> SipResponse:
        """A re-INVITE from the phone or carrier once it answered (RFC 3261 §14.2; reinvites.py)."""
        return self.reinvites.answer(request, self.on_offer, self.contact, None)

    def matches(self, request: SipRequest) -> bool:
        """A request from the phone in this dialog: our tag is in its To."""
        return f"tag={self.from_tag}" in (request.headers.get("to") or "")

    def close(self) -> None:
        self.reinvites.close()

    def phone_ended(self, how: str) -> None:
        if not self.ended.is_set():
            self.ended_by = how
            self.ended.set()
