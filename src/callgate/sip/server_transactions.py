"""The edge's server side of RFC 3261 §17.2: requests in, one final response out each.

- the top Via is stamped with `received`/`rport` (RFC 3581);
- a retransmitted request gets the same final response again without being handled twice
  (a server transaction, §17.2.2, kept 32 s: Timer J);
- each request goes to the handler of its method (registration.py, dialogs.py), which
  answers it; a method without one gets `405` with Allow (§8.2.1); an ACK has no response.

`ServerTransactions` is the base of `SipEdge` (edge.py); the methods live in the mixins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from callgate.clock import Clock
from callgate.sip.message import SipMessage, SipParseError, SipRequest, SipResponse
from callgate.sip.responses import ALLOW, ALLOW_CALLS, encode, response
from callgate.sip.transport import Counters, Peer
from callgate.sip.via import parse_via, response_target, stamp_received

log = logging.getLogger(__name__)

TRANSACTION_TTL = 32.0  # Timer J (RFC 3261 §17.2.2): 64 * T1
MAX_TRANSACTIONS = 20_000
Handler = Callable[[SipRequest, Peer], Awaitable[SipResponse | None]]


class ServerTransactions:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.counters = Counters()
        self.handlers: dict[str, Handler] = {}
        self._transactions: dict[tuple[str, str, str], tuple[float, bytes | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def allow(self) -> str:
        return ALLOW_CALLS if "INVITE" in self.handlers else ALLOW

    def dispatch(self, message: SipMessage, peer: Peer) -> None:
        if isinstance(message, SipResponse):
            self._response(message, peer)
            return
        try:
            via = stamp_received(message.headers, peer.address)
        except SipParseError as exc:
            self._send(peer, None, encode(response(message, exc.status, exc.reason)))
            return
        key = (via.branch or "", f"{via.host}:{via.port}", message.method)
        if via.branch and via.branch.startswith("z9hG4bK") and message.method != "ACK":
            cached = self._transactions.get(key)
            if cached is not None:  # a retransmission (§17.2.3)
                if cached[1] is not None:
                    self._send(peer, message, cached[1])
                return
            if len(self._transactions) >= MAX_TRANSACTIONS:
                self._send(peer, message, encode(busy(message)))
                return
            self._transactions[key] = (0.0, None)
        self._spawn(self._handle(message, peer, key))

    def _response(self, message: SipResponse, peer: Peer) -> None:
        """A response to one of our requests (client transactions: SipEdge)."""

    def _ack(self, request: SipRequest, peer: Peer) -> None:
        """An ACK: of our non-2xx final it ends there (§17.2.1), of a 2xx it is the dialog's."""

    async def _handle(self, request: SipRequest, peer: Peer, key: tuple[str, str, str]) -> None:
        handler = self.handlers.get(request.method)
        try:
            if request.method == "ACK":
                self._ack(request, peer)
                return
            if handler is None:
                reply: SipResponse | None = response(
                    request, 405, "Method Not Allowed", [("Allow", self.allow)]
                )
            else:
                reply = await handler(request, peer)
        except SipParseError as exc:
            reply = response(request, exc.status, exc.reason)
        except Exception:
            log.exception("sip %s from %s failed", request.method, peer.address[0])
            reply = response(request, 500, "Server Internal Error")
        if reply is None:
            self._transactions.pop(key, None)
            return
        data = encode(reply)
        self.counters.by_status[reply.status] = self.counters.by_status.get(reply.status, 0) + 1
        if key[0]:
            self._transactions[key] = (self._clock.monotonic() + TRANSACTION_TTL, data)
        self._send(peer, request, data)

    def _prune(self, now: float) -> None:
        """Forget the transactions past Timer J (those still being handled stay)."""
        self._transactions = {
            k: v for k, v in self._transactions.items() if v[0] > now or v[1] is None
        }

    def _send(self, peer: Peer, request: SipRequest | None, data: bytes) -> None:
        if peer.transport == "UDP" and request is not None:
            via = parse_via(request.headers.all("via")[0])
            peer.send(data, response_target(via, peer.address))  # RFC 3581 §4
        else:
            peer.send(data)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def busy(request: SipRequest) -> SipResponse:
    return response(request, 503, "Service Unavailable", [("Retry-After", "5")])
