"""The re-INVITEs a dialog takes once its call is answered (RFC 3261 §14.2), one implementation for
both directions: a call a phone or trunk made to us (invite.py `InboundCall`) and a call we made
to a phone or a carrier (outbound.py `OutboundCall`). docs/sip.md, "Hold and session refresh".

The call handler gives the dialog an `on_offer` (runtime/sip_reoffers.py `Reoffers`): the
party's SDP → ours, or SdpError. Here the SIP side of it:

- an offer gets `200 OK` with our answer, or `488 Not Acceptable Here` (with a `Warning` when the
  media address is forbidden) and the session stays as it was (§14.2);
- an offerless re-INVITE gets our current SDP as the offer in the `200`; its answer comes in the
  ACK (§14.2, RFC 3264 §4). Until that ACK our offer is outstanding, and a re-INVITE that comes
  meanwhile gets `491 Request Pending`: an offer may not cross an outstanding one (RFC 3264 §4,
  RFC 6337 §3.1.3; as §14.2's 491 for an INVITE while ours is in progress). The ACK's SDP is not
  read: our offer is our current session, so any answer the party can give leaves it unchanged;
- a session timer (RFC 4028, session_timers.py) the dialog's INVITE or a re-INVITE asks for is in
  our 2xx, and each 2xx'd re-INVITE is a refresh; with none before the timer's watch ends, the
  call is ended (BYE, RFC 4028 §10; `session-expired`). A Session-Expires we refuse gets 422 or
  400 and changes nothing;
- our 2xx to a re-INVITE is retransmitted every T1, doubling to T2, until the party's ACK
  (§13.3.1.4: over TCP and TLS too, a later hop may be UDP); with no ACK after 64·T1 the
  offer it carried is no longer outstanding and the call is ended (BYE, §13.3.1.4; `party-lost`): a party that no longer ACKs is gone.
- bounded: one unACKed 2xx per dialog at a time (a re-INVITE meanwhile gets `500` with a
  Retry-After, §14.2: a 2xx retransmitted ~11 times each is not multiplied); a re-INVITE whose
  CSeq is not above the last one's gets `500` (§12.2.2: out of order); and at most
  MAX_REINVITES in WINDOW_S seconds per call, beyond which `500` with a Retry-After (counted
  in `limited`, logged once per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from callgate.sip.message import SipRequest, SipResponse
from callgate.sip.responses import response
from callgate.sip.sdp import SdpError
from callgate.sip.session_timers import SessionTimer, TimerError, session_timer
from callgate.sip.timers import T1, T2, TIMEOUT

log = logging.getLogger(__name__)

MAX_REINVITES = 30  # per call in WINDOW_S: refreshes, holds and moves, far more than a phone's
WINDOW_S = 60.0

# a call's `ended_by` when the server ended it for its party (the CDR reasons of the same name)
EXPIRED = "session-expired"  # its session timer ran out
PARTY_LOST = "party-lost"  # it did not ACK our 2xx to its re-INVITE
OnOffer = Callable[[bytes], bytes]  # the party's SDP (empty: none) → ours; SdpError: 488


class Reinvites:
    def __init__(self, ended: asyncio.Event, end: Callable[[str], Awaitable[None]]) -> None:
        """`ended`: the call's end; `end(why)`: BYE, the call ended by the server (module doc)."""
        self.offered: int | None = None  # the CSeq of our 2xx that carried an offer, until ACKed
        self.timer: SessionTimer | None = None
        self._ended, self._end = ended, end
        self._deadline = 0.0  # loop time: the next refresh is due before this
        self._watching: asyncio.Task[None] | None = None
        self._unacked: dict[int, asyncio.Event] = {}  # CSeq of our 2xx → its ACK
        self._tasks: set[asyncio.Task[None]] = set()
        self._cseq: int | None = None  # the last re-INVITE's CSeq (§12.2.2: each one higher)
        self._recent: list[float] = []  # loop times of the re-INVITEs within WINDOW_S
        self.limited = 0  # re-INVITEs refused for coming too often (MAX_REINVITES)
        # the BYEs `_ending` sends, not cancelled by `close`: the edge's set, awaited by its close
        self.endings: set[asyncio.Task[None]] = set()

    def answer(
        self, request: SipRequest, on_offer: OnOffer | None, contact: str, to_tag: str | None
    ) -> SipResponse:
        """The final response to a re-INVITE of an answered call (module doc)."""
        cseq = cseq_number(request)
        if cseq is not None and self._cseq is not None and cseq <= self._cseq:
            return response(
                request, 500, "Server Internal Error (CSeq out of order)", to_tag=to_tag
            )
        if cseq is not None:
            self._cseq = cseq
        if self._too_often():
            reason = "Server Internal Error (too many re-INVITEs)"
            return response(request, 500, reason, _retry(), to_tag=to_tag)
        if self.offered is not None:
            return response(request, 491, "Request Pending", to_tag=to_tag)
        if self._unacked:  # our 2xx to the last one is not ACKed yet (§14.2)
            reason = "Server Internal Error (2xx not yet acknowledged)"
            return response(request, 500, reason, _retry(), to_tag=to_tag)
        if on_offer is None:
            return response(request, 488, "Not Acceptable Here", to_tag=to_tag)
        try:
            timer = session_timer(request)
        except TimerError as exc:
            return response(request, exc.status, str(exc), exc.headers, to_tag=to_tag)
        try:
            sdp = on_offer(request.body)
        except SdpError as exc:  # with a Warning when the media address is forbidden
            warning = [("Warning", exc.warning)] if exc.warning else []
            reason = f"Not Acceptable Here ({exc})"
            return response(request, 488, reason, warning, to_tag=to_tag)
        if not request.body.strip():
            self.offered = cseq_number(request)
        extra = [("Contact", f"<{contact}>"), ("Content-Type", "application/sdp")]
        extra += self.refreshed(timer)
        return response(request, 200, "OK", extra, body=sdp, to_tag=to_tag)

    def _too_often(self) -> bool:
        now = asyncio.get_running_loop().time()
        self._recent = [t for t in self._recent if now - t < WINDOW_S]
        if len(self._recent) >= MAX_REINVITES:
            if not self.limited:
                log.warning("sip: re-INVITEs over %d in %.0f s: refused", MAX_REINVITES, WINDOW_S)
            self.limited += 1
            return True
        self._recent.append(now)
        return False

    def refreshed(self, timer: SessionTimer | None) -> list[tuple[str, str]]:
        """A 2xx to the dialog's INVITE or a re-INVITE that asked for `timer` (None: no timer
        from now on): the headers it carries, and the watch starts over (RFC 4028 §10)."""
        self.timer = timer
        if timer is None:
            return []
        self._deadline = asyncio.get_running_loop().time() + timer.watch
        if self._watching is None or self._watching.done():
            self._watching = self._spawn(self._watch())
        return timer.headers

    def sent(self, request: SipRequest, resend: Callable[[], None] | None) -> None:
        """Our 2xx to `request` (a re-INVITE) went out: `resend` it until its ACK, or end the
        call (module doc, §13.3.1.4: on every transport, as a later hop may be UDP; None: not
        resent)."""
        cseq = cseq_number(request)
        if cseq is not None and cseq not in self._unacked:
            self._unacked[cseq] = asyncio.Event()
            self._spawn(self._retransmit(cseq, self._unacked[cseq], resend))

    async def _retransmit(
        self, cseq: int, acked: asyncio.Event, resend: Callable[[], None] | None
    ) -> None:
        interval, waited = T1, 0.0
        while waited < TIMEOUT:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), interval)
                return
            waited += interval
            interval = min(interval * 2, T2)
            if resend is not None and not self._ended.is_set():
                resend()
        self._unacked.pop(cseq, None)
        if self.offered == cseq:
            self.offered = None  # a later re-INVITE is not 491 for the rest of the call
        await self._ending(PARTY_LOST)

    async def _ending(self, why: str) -> None:
        """BYE (not cancelled by `close`: the call's end goes out whole; kept in `endings`,
        which the edge's close awaits)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
            self.endings.add(task)
            task.add_done_callback(self.endings.discard)
        if not self._ended.is_set():
            await self._end(why)

    def close(self) -> None:
        """The call is over: its watch and retransmissions stop."""
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.timer is not None and not self._ended.is_set():
            wait = self._deadline - loop.time()
            if wait <= 0:
                await self._ending(EXPIRED)  # no refresh came: BYE (RFC 4028 §10)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), wait)

    def acked(self, request: SipRequest) -> None:
        """The party's ACK of our 2xx (it stops being retransmitted); of the 2xx that carried
        our offer, that offer is answered."""
        cseq = cseq_number(request)
        acked = self._unacked.pop(cseq, None) if cseq is not None else None
        if acked is not None:
            acked.set()
        if self.offered is not None and cseq == self.offered:
            self.offered = None


def _retry() -> list[tuple[str, str]]:
    return [("Retry-After", str(secrets.randbelow(11)))]  # 0-10 s (RFC 3261 §14.2)


def asked_timer(request: SipRequest) -> SessionTimer | None:
    """The session timer an INVITE the edge already admitted asks for (its TimerError was
    answered then)."""
    with contextlib.suppress(TimerError):
        return session_timer(request)
    return None


def cseq_number(request: SipRequest) -> int | None:
    number = (request.headers.get("cseq") or "").split(" ", 1)[0]
    return int(number) if number.isascii() and number.isdigit() and len(number) <= 10 else None
