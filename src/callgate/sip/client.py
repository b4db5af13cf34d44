"""Our requests to phones: client transactions matched by the top Via's branch and the CSeq
method (RFC 3261 §17.1.3: a CANCEL shares its INVITE's branch, and each gets its own final
response), and the non-INVITE client transaction (§17.1.2) BYE, CANCEL and OPTIONS use.

Defence in depth beyond §17.1.3: a response is taken only from the address the request was
sent to (IP and port; RFC 3581 §4 has the answering side send from where the request arrived,
and over TCP/TLS it comes on the same flow), so whoever learnt a branch cannot answer for the
phone or the carrier from elsewhere. A destination given by host name is matched on the branch
alone."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

from callgate.sip.message import SipParseError, SipRequest, SipResponse, serialize
from callgate.sip.timers import T1, T2, TIMEOUT
from callgate.sip.transport import Peer
from callgate.sip.via import parse_via

OnResponse = Callable[[SipResponse], None]


class ClientTransactions:
    def __init__(self) -> None:
        # (branch, method) -> who gets its responses, and from where (None: anywhere)
        self._waiting: dict[tuple[str, str], tuple[OnResponse, tuple[str, int] | None]] = {}
        self.wrong_source = 0  # responses dropped as not from the request's destination

    def register(
        self,
        branch: str,
        callback: OnResponse,
        method: str = "INVITE",
        peer: tuple[str, int] | None = None,
    ) -> Callable[[], None]:
        """Send responses with `branch` to `method` from `peer` (where the request went) to
        `callback`; returns the function that stops it."""
        key = (branch, method)
        entry = (callback, _literal(peer))
        self._waiting[key] = entry

        def forget() -> None:
            if self._waiting.get(key) is entry:
                del self._waiting[key]

        return forget

    def response(self, message: SipResponse, source: tuple[str, int] | None = None) -> None:
        """A response a phone sent us from `source`: to its transaction, else dropped
        (§18.1.2; module doc)."""
        vias = message.headers.all("via")
        if not vias:
            return
        try:
            branch = parse_via(vias[0]).branch or ""
        except SipParseError:
            return
        parts = (message.headers.get("cseq") or "").split()
        method = parts[-1] if parts else ""
        waiting = self._waiting.get((branch, method))
        if waiting is None:
            return
        callback, expected = waiting
        if expected is not None and _literal(source) != expected:
            self.wrong_source += 1
            return
        callback(message)

    async def send_request(self, request: SipRequest, peer: Peer) -> SipResponse | None:
        """Send `request` over the phone's flow and wait for its final response: retransmitted
        over UDP every T1, doubling to T2 (Timer E); None after 64·T1 (Timer F)."""
        branch = parse_via(request.headers.all("via")[0]).branch or ""
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

        def final(reply: SipResponse) -> None:
            if reply.status >= 200 and not future.done():
                future.set_result(reply)

        forget = self.register(branch, final, request.method, peer.address)
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


def _literal(address: tuple[str, int] | None) -> tuple[str, int] | None:
    """`address` with its IP in canonical form; None for a host name (matched on the branch)."""
    if address is None:
        return None
    try:
        return (str(ipaddress.ip_address(address[0])), int(address[1]))
    except ValueError:
        return None
