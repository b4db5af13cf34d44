"""An INVITE from a phone, as the edge's user agent server sees it (RFC 3261 §13.3, §17.2.1).

`InboundCall` is what the edge hands the call handler (runtime/sip_calls.py) once the phone has
authenticated: the handler rings someone, then `accept`s with our SDP or `reject`s; after the
call it may `hang_up`. The phone's side arrives as events: `acked` (its ACK of our 200) and
`ended` (its BYE, or a CANCEL before we answered).

- 100 Trying is sent at once (§8.2.6.1), 180 Ringing when the handler says so.
- Our 200 OK is retransmitted every T1, doubling to T2, until the ACK comes or 64·T1 have passed
  (§13.3.1.4: on every transport, TCP and TLS too, as a proxy's later hop may be UDP); then the
  call is ended as unacknowledged.
- Our BYE (§15.1.1) goes over the flow the INVITE came on, retransmitted over UDP (Timer E) until
  a final response or 64·T1 (Timer F).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from callgate.sip.credentials import Credential
from callgate.sip.message import Headers, SipRequest, SipResponse
from callgate.sip.reinvites import OnOffer, Reinvites, asked_timer
from callgate.sip.responses import response
from callgate.sip.timers import T1, T2, TIMEOUT
from callgate.sip.transport import Peer
from callgate.sip.trunks import Trunk
from callgate.sip.uri import parse_name_addr

SendResponse = Callable[[SipResponse], None]
SendRequest = Callable[[SipRequest, Peer], Awaitable[SipResponse | None]]


class InboundCall:
    def __init__(
        self,
        request: SipRequest,
        peer: Peer,
        credential: Credential | None,
        send: SendResponse,
        send_request: SendRequest,
        trunk: Trunk | None = None,
    ) -> None:
        self.request = request
        self.peer = peer
        self.credential = credential  # the calling device, or None from a trunk
        self.trunk = trunk
        self.call_id = request.headers.get("call-id") or ""
        self.to_tag = secrets.token_hex(6)
        self.final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.acked = asyncio.Event()
        self.ended = asyncio.Event()  # the phone hung up (BYE) or cancelled
        self.ended_by = ""  # "bye" | "cancel"
        self._send = send
        self._send_request = send_request
        self._cseq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.answered = False
        self.contact = ""  # ours, once answered
        # a re-INVITE's SDP → our answer (SdpError: 488); set by the call handler
        self.on_offer: OnOffer | None = None
        self.reinvites = Reinvites(self.ended, self.hang_up)
        # a key the phone sent by INFO (key, ms) → whether it was taken (sip/dtmf_info.py)
        self.on_key: Callable[[str, int], bool] | None = None
        self.recorded = False  # the hub has the attempt (it writes the CDR); else attempts.py
        self.forged = 0  # in-dialog requests refused as not a party's (edge_dialogs.py)

    # -- what the handler calls ------------------------------------------------------------------

    def trying(self) -> None:
        self._send(response(self.request, 100, "Trying"))

    def ringing(self) -> None:
        if not self.final.done():
            self._send(response(self.request, 180, "Ringing", self._routes(), to_tag=self.to_tag))

    def reject(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        if not self.final.done():
            refusal = response(self.request, status, reason, list(headers), to_tag=self.to_tag)
            self.final.set_result(refusal)

    def accept(self, sdp: bytes, contact: str) -> None:
        """200 OK with our SDP; retransmitted until the phone's ACK (module doc)."""
        if self.final.done():
            return
        self.answered = True
        self.contact = contact
        extra = [*self._routes(), ("Contact", f"<{contact}>"), ("Content-Type", "application/sdp")]
        extra += self.reinvites.refreshed(asked_timer(self.request))  # RFC 4028 §9
        ok = response(self.request, 200, "OK", extra, body=sdp, to_tag=self.to_tag)
        self.final.set_result(ok)
        self._spawn(self._retransmit(ok))  # on every transport: a later hop may be UDP

    def reoffer(self, request: SipRequest) -> SipResponse:
        """A re-INVITE in this answered dialog (RFC 3261 §14.2; reinvites.py)."""
        return self.reinvites.answer(request, self.on_offer, self.contact, self.to_tag)

    def _routes(self) -> list[tuple[str, str]]:
        """The proxies that asked to stay in the dialog, copied into our responses that make
        it (RFC 3261 §12.1.1)."""
        return [("Record-Route", value) for value in self.request.headers.all("record-route")]

    async def _retransmit(self, ok: SipResponse) -> None:
        interval, waited = T1, 0.0
        while waited < TIMEOUT:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), interval)
                return
            waited += interval
            interval = min(interval * 2, T2)
            if not self.acked.is_set():
                self._send(ok)

    async def hang_up(self, by: str = "us") -> None:
        """BYE to the phone (after it was answered and has not hung up itself); `by`: why
        (`EXPIRED`: its session timer ran out, reinvites.py)."""
        if not self.answered or self.ended.is_set():
            return
        self.ended.set()
        self.ended_by = by
        await self._send_request(self._in_dialog("BYE"), self.peer)

    async def probe(self) -> int | None:
        """OPTIONS in the dialog (RFC 3261 §11): the phone's final status, None when none came
        (Timer F) (runtime/sip_quiet.py asks a phone that holds the call)."""
        reply = await self._send_request(self._in_dialog("OPTIONS"), self.peer)
        return None if reply is None else reply.status

    def _in_dialog(self, method: str) -> SipRequest:
        self._cseq += 1
        contact = self.request.headers.get("contact")
        target = parse_name_addr(contact).uri if contact else self.request.uri
        host, port = self.peer.local
        headers = Headers()
        branch = "z9hG4bK" + secrets.token_hex(8)
        headers.add("via", f"SIP/2.0/{self.peer.transport} {host}:{port};branch={branch};rport")
        headers.add("max-forwards", "70")
        for route in self.request.headers.all("record-route"):  # our route set, in order
            headers.add("route", route)
        # our side of the dialog: their To with our tag is our From (§12.1.1)
        to = self.request.headers.get("to") or ""
        headers.add("from", f"{to};tag={self.to_tag}")
        headers.add("to", self.request.headers.get("from") or "")
        headers.add("call-id", self.call_id)
        headers.add("cseq", f"{self._cseq} {method}")
        return SipRequest(method, target, headers)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.reinvites.close()

    # -- what the edge calls ---------------------------------------------------------------------

    def phone_ended(self, how: str) -> None:
        if not self.ended.is_set():
            self.ended_by = how
            self.ended.set()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
