"""Our requests to phones: client transactions matched by the top Via's branch and the CSeq
method (RFC 3261 §17.1.3: a CANCEL shares its INVITE's branch, and each gets its own final
response), and the non-INVITE client transaction (§17.1.2) BYE, CANCEL and OPTIONS use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callgate.sip.invite import T1, T2, TIMEOUT
from callgate.sip.message import SipParseError, SipRequest, SipResponse, serialize
from callgate.sip.transport import Peer
from callgate.sip.via import parse_via

OnResponse = Callable[[SipResponse], None]


class ClientTransactions:
    def __init__(self) -> None:
        # (branch, method) -> who gets its responses
        self._waiting: dict[tuple[str, str], OnResponse] = {}

    def register(
        self, branch: str, callback: OnResponse, method: str = "INVITE"
    ) -> Callable[[], None]:
        """Send responses with `branch` to `method` to `callback`; returns the function that
        stops it."""
        key = (branch, method)
        self._waiting[key] = callback

        def forget() -> None:
            if self._waiting.get(key) is callback:
                del self._waiting[key]

        return forget

    def response(self, message: SipResponse) -> None:
        """A response a phone sent us: to its transaction, else dropped (§18.1.2)."""
        vias = message.headers.all("via")
        if not vias:
            return
        try:
            branch = parse_via(vias[0]).branch or ""
        except SipParseError:
            return
        parts = (message.headers.get("cseq") or "").split()
        method = parts[-1] if parts else ""
        callback = self._waiting.get((branch, method))
        if callback is not None:
            callback(message)

    async def send_request(self, request: SipRequest, peer: Peer) -> SipResponse | None:
        """Send `request` over the phone's flow and wait for its final response: retransmitted
        over UDP every T1, doubling to T2 (Timer E); None after 64·T1 (Timer F)."""
        branch = parse_via(request.headers.all("via")[0]).branch or ""
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

        def final(reply: SipResponse) -> None:
            if reply.status >= 200 and not future.done():
                future.set_result(reply)

        forget = self.register(branch, final, request.method)
        data = serialize(request)
        interval, waited = T1, 0.0
        try:
            while waited < TIMEOUT:
                peer.send(data, peer.address)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), interval)
                except TimeoutError:
                    waited += interval
                    # over a stream transport nothing is resent: wait out the timeout
                    interval = min(interval * 2, T2) if peer.transport == "UDP" else TIMEOUT
            return None
        finally:
            forget()
