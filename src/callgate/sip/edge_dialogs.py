"""INVITE dialogs at the edge (RFC 3261 §12-§15): the server side of a call and the requests
inside it.

- an INVITE needs digest credentials of a SIP device (auth.py) or comes from a trunk's address
  (trunks.py); within the device's INVITE rate (invite_limits.py), the edge's MAX_CALLS and the
  trunk's channels (trunk_limits.py), it becomes an `InboundCall` (invite.py) handed to the
  call handler (runtime/sip_calls.py); INVITEs refused here are recorded (attempts.py);
- a request inside a dialog (re-INVITE, ACK, BYE, CANCEL) is matched by Call-ID and tags
  (§12.2.2) and taken only from the party that made the dialog (dialog_party.py); anything else
  gets `403` and the call goes on unchanged; a re-INVITE, in a call either side made, is
  answered by the call (reinvites.py) and a device's is digest-challenged like its BYE;
- a registered device's BYE is digest-challenged like its INVITEs (§22: any request but ACK
  and CANCEL may be, §9.2 and §22.1), so knowing a call's tags and the phone's IP is not
  enough to end it (the device name's failure lockout does not apply: anyone could trip it and
  keep the call up); a trunk's BYE is taken by its address, as its INVITEs are;
- INFO in an answered call carries a key press (dtmf_info.py), handed to the call's `on_key`;
  a registered device's INFO is digest-challenged like its BYE, so a forged key press needs the
  device's password, not only the call's tags and the phone's IP.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol

from callgate.sip.attempts import Attempt, Attempts, describe
from callgate.sip.auth import Authenticator
from callgate.sip.credentials import Credential
from callgate.sip.dialog_party import same_party
from callgate.sip.dtmf_info import TYPES, InfoError, parse_info
from callgate.sip.edge_outbound import EdgeOutbound
from callgate.sip.invite import InboundCall
from callgate.sip.invite_limits import BURST, RATE, InviteLimits, retry_after
from callgate.sip.message import SipRequest, SipResponse
from callgate.sip.outbound import OutboundCall
from callgate.sip.responses import encode, response
from callgate.sip.server_transactions import busy
from callgate.sip.session_timers import TimerError, session_timer
from callgate.sip.transport import Peer
from callgate.sip.trunk_limits import TrunkLimited
from callgate.sip.trunks import Trunks

log = logging.getLogger(__name__)

MAX_CALLS = 500  # INVITE dialogs at once
FORGED_AUDITS = 5  # audit entries per call for in-dialog requests from others
CALL_SETUP_LIMIT = 180.0  # seconds an INVITE may wait for its final response


class CallHandler(Protocol):
    """What the edge hands an authenticated INVITE to (runtime/sip_calls.py)."""

    async def invite(self, call: InboundCall) -> None: ...


class EdgeDialogs(EdgeOutbound):
    trunks: Trunks  # INVITEs from their addresses skip digest
    attempts: Attempts | None  # CDRs of INVITEs refused here
    auth: Authenticator
    invite_limits: InviteLimits  # each device's INVITE rate
    call_handler: CallHandler | None

    def take_calls(self, handler: CallHandler) -> None:
        """Answer INVITEs (and their ACK, BYE, CANCEL) by handing them to `handler`."""
        self.call_handler = handler
        self.handlers.update(
            {"INVITE": self._invite, "BYE": self._bye, "CANCEL": self._cancel, "INFO": self._info}
        )

    async def _invite(self, request: SipRequest, peer: Peer) -> SipResponse | None:
        call_id = request.headers.get("call-id") or ""
        if _to_tag(request):  # inside a dialog: ours, or 481 (RFC 3261 §12.2.2)
            return await self._reinvite(request, peer)
        trunk = self.trunks.by_address(peer.address[0])
        if trunk is not None:  # IP-based trunk authentication
            credential: Credential | None = None
            refusal: SipResponse | None = None
        else:
            credential, refusal = await self.auth.authenticate(request, peer)
        if refusal is not None or (credential is None and trunk is None):
            assert refusal is not None
            if self.attempts is not None and refusal.status == 401:
                self.attempts.challenged(call_id, self._attempt(request, peer, refusal))
            else:
                await self._record(self._attempt(request, peer, refusal))
            return refusal
        if self.attempts is not None:
            self.attempts.authenticated(call_id)
        extension = bad_extension(request) or bad_timer(request)
        if extension is not None:
            await self._record(self._attempt(request, peer, extension))
            return extension
        if call_id in self.calls:  # the call's Call-ID without a To tag: a merged request
            return response(request, 482, "Loop Detected")  # (RFC 3261 §8.2.2.2)
        if credential is not None and trunk is None:
            limited = self._invite_limited(request, credential)
            if limited is not None:
                return limited  # no record: a flood must not grow the records (invite_limits.py)
        if len(self.calls) >= MAX_CALLS or self.call_handler is None:
            refused = busy(request)
            await self._record(self._attempt(request, peer, refused))
            return refused
        if trunk is not None:  # the trunk's channels and call rate (trunk_limits.py)
            limits = self.trunk_limits
            limit = await limits.admit(
                call_id, trunk.name, trunk.max_calls, trunk.max_cps, "inbound"
            )
            if limit is not None:
                refused = response(request, limit.status, limit.reason, TrunkLimited(limit).headers)
                await self._record(self._attempt(request, peer, refused))
                self._trunk_refused(trunk.name, limit, "inbound")
                return refused
            self._trunk_calls[call_id] = trunk.name
            self._trunk_leases[call_id] = call_id

        def send(reply: SipResponse) -> None:
            self._send(peer, request, encode(reply))

        call = InboundCall(request, peer, credential, send, self.clients.send_request, trunk)
        call.reinvites.endings = self.endings
        self.calls[call_id] = call
        call.trying()
        self._spawn(self._run_call(call))
        try:
            return await asyncio.wait_for(asyncio.shield(call.final), CALL_SETUP_LIMIT)
        except TimeoutError:
            call.reject(408, "Request Timeout")
            return await call.final

    async def _run_call(self, call: InboundCall) -> None:
        assert self.call_handler is not None
        try:
            await self.call_handler.invite(call)
        except Exception:
            log.exception("sip call %s failed", call.call_id)
            call.reject(500, "Server Internal Error")
        finally:
            call.close()
            self.calls.pop(call.call_id, None)
            self._release_trunk(call.call_id)
            final = call.final.result() if call.final.done() else None
            if final is not None and final.status >= 300 and not call.recorded:
                await self._record(self._attempt(call.request, call.peer, final))

    def _attempt(self, request: SipRequest, peer: Peer, final: SipResponse) -> Attempt:
        return describe(request, peer.address[0], final.status, final.reason, self._clock.wall())

    async def _record(self, attempt: Attempt) -> None:
        if self.attempts is None:
            return
        try:
            await asyncio.to_thread(self.attempts.record, attempt)
        except Exception:
            log.exception("sip: call record of a refused INVITE not written")

    def _invite_limited(self, request: SipRequest, credential: Credential) -> SipResponse | None:
        """`503` with Retry-After when the device is over its INVITE rate (invite_limits.py);
        the first refusal of a run is audited (`sip.invite.limit`)."""
        wait = self.invite_limits.take(credential.username)
        if wait is None:
            return None
        if self.invite_limits.first_of_run(credential.username):
            details = {"burst": BURST, "rate": RATE}
            actor, obj = f"sip:{credential.username}", f"user:{credential.handle}"
            self.audits.soon(actor, "sip.invite.limit", obj, details)
        headers = [("Retry-After", retry_after(wait))]
        return response(request, 503, "Service Unavailable (INVITE rate)", headers)

    # -- requests inside a dialog ----------------------------------------------------------------

    def _dialog(self, request: SipRequest) -> InboundCall | OutboundCall | None:
        call = self.calls.get(request.headers.get("call-id") or "")
        if call is None:
            return None
        if isinstance(call, OutboundCall):
            return call if call.matches(request) else None
        ours = f"tag={call.to_tag}"
        theirs = request.headers.get("from") or ""
        if request.method != "CANCEL" and ours not in (request.headers.get("to") or ""):
            return None
        return call if theirs == call.request.headers.get("from") else None

    def _same_party(
        self,
        call: InboundCall | OutboundCall,
        request: SipRequest,
        peer: Peer,
        credential: Credential | None = None,
    ) -> bool:
        name = self._trunk_calls.get(call.call_id) if isinstance(call, OutboundCall) else None
        trunk = next((t for t in self.trunks.all if t.name == name), None) if name else None
        return same_party(call, request.method, peer.address[0], credential, trunk)

    def _forged(
        self,
        call: InboundCall | OutboundCall,
        request: SipRequest,
        peer: Peer,
        credential: Credential | None = None,
    ) -> SipResponse:
        """403 to an in-dialog request from someone else; the call goes on unchanged. Audited
        `sip.dialog.forged`, the first few per call (the rest are counted in responses)."""
        call.forged += 1
        if call.forged <= FORGED_AUDITS:
            actor = (
                f"sip:{credential.username}" if credential is not None else f"sip:{peer.address[0]}"
            )
            details = {"method": request.method, "source": f"{peer.address[0]}:{peer.address[1]}"}
            self.audits.soon(actor, "sip.dialog.forged", f"call:{call.call_id}", details)
        log.warning("sip %s in call %s from %s: not a party of the dialog", request.method,
                    call.call_id, peer.address[0])  # fmt: skip
        return response(request, 403, "Forbidden (not a party to this dialog)")

    def _device_dialog(self, call: InboundCall | OutboundCall) -> bool:
        """Whether the other party of `call` is a registered device (digest), not a trunk."""
        if isinstance(call, InboundCall):
            return call.credential is not None
        return call.call_id not in self._trunk_calls

    async def _reinvite(self, request: SipRequest, peer: Peer) -> SipResponse:
        """A re-INVITE (RFC 3261 §14.2) in any call, ours or theirs, once it is shown to come
        from that call's party (a device signs it, as its BYE): its answer (sip/reinvites.py);
        while the dialog's first INVITE has no final response, `491` when that INVITE is ours
        (§14.2: ours is in progress), `500` with Retry-After when it is theirs (§14.2)."""
        call = self._dialog(request)
        if call is None or call.ended.is_set():
            stray = response(request, 481, "Call/Transaction Does Not Exist")
            if call is None:  # no call of ours: recorded like any refused INVITE
                await self._record(self._attempt(request, peer, stray))
            return stray
        credential, refusal = await self._device_digest(call, request, peer)
        if refusal is not None:
            return refusal
        if not self._same_party(call, request, peer, credential):
            return self._forged(call, request, peer, credential)
        extension = bad_extension(request)
        if extension is not None:
            return extension
        if not call.answered and isinstance(call, OutboundCall):
            return response(request, 491, "Request Pending")
        if not call.answered:
            retry = [("Retry-After", str(secrets.randbelow(11)))]  # 0-10 s (§14.2)
            return response(request, 500, "Server Internal Error (INVITE pending)", retry)
        reply = call.reoffer(request)
        if 200 <= reply.status < 300:  # retransmitted until the ACK (§13.3.1.4, reinvites.py)
            data = encode(reply)  # on every transport: a later hop may be UDP (§13.3.1.4)
            call.reinvites.sent(request, lambda: self._send(peer, request, data))
        return reply

    def _ack(self, request: SipRequest, peer: Peer) -> None:
        call = self._dialog(request)
        if call is None or not self._same_party(call, request, peer):
            return
        if isinstance(call, InboundCall):
            call.acked.set()
        call.reinvites.acked(request)  # the answer to an offer in our 2xx to a re-INVITE

    async def _answered_dialog(
        self, request: SipRequest, peer: Peer
    ) -> InboundCall | OutboundCall | SipResponse:
        """The answered call an in-dialog BYE or INFO belongs to, once it is shown to come from
        that call's party (a device signs it with its own credential); else the refusal."""
        call = self._dialog(request)
        if call is None or not call.answered:
            return response(request, 481, "Call/Transaction Does Not Exist")
        credential, refusal = await self._device_digest(call, request, peer)
        if refusal is not None:
            return refusal
        if not self._same_party(call, request, peer, credential):
            return self._forged(call, request, peer, credential)
        return call

    async def _bye(self, request: SipRequest, peer: Peer) -> SipResponse:
        call = await self._answered_dialog(request, peer)
        if isinstance(call, SipResponse):
            return call  # refused
        call.phone_ended("bye")
        return response(request, 200, "OK")

    async def _info(self, request: SipRequest, peer: Peer) -> SipResponse:
        """A key press by INFO (RFC 2976; RFC 6086 §2 legacy usage): `200` once the call took
        it, `415` with Accept for other bodies, `400` for a bad one (dtmf_info.py)."""
        call = await self._answered_dialog(request, peer)
        if isinstance(call, SipResponse):
            return call  # refused
        try:
            key, duration = parse_info(request.headers.get("content-type") or "", request.body)
        except InfoError as exc:
            accept = [("Accept", ", ".join(TYPES))] if exc.status == 415 else []
            return response(request, exc.status, str(exc), accept)
        if call.on_key is None or not call.on_key(key, duration):
            return response(request, 503, "Service Unavailable (key not taken)")
        return response(request, 200, "OK")

    async def _device_digest(
        self, call: InboundCall | OutboundCall, request: SipRequest, peer: Peer
    ) -> tuple[Credential | None, SipResponse | None]:
        """A device dialog's request from the call's address is digest-checked (401 first,
        §22); no per-device lockout, which anyone could trip (auth.py). Others: (None, None),
        judged by `_same_party`."""
        if self._device_dialog(call) and peer.address[0] == call.peer.address[0]:
            return await self.auth.authenticate(request, peer, in_dialog=True)
        return None, None

    async def _cancel(self, request: SipRequest, peer: Peer) -> SipResponse:
        call = self._dialog(request)
        if not isinstance(call, InboundCall) or call.final.done():
            return response(request, 481, "Call/Transaction Does Not Exist")
        if not self._same_party(call, request, peer):
            return self._forged(call, request, peer)
        call.phone_ended("cancel")
        call.reject(487, "Request Terminated")  # the INVITE's final (§9.2)
        return response(request, 200, "OK")


def _to_tag(request: SipRequest) -> bool:
    """Whether the request is inside a dialog: its To has a tag (RFC 3261 §12.2)."""
    return ";tag=" in (request.headers.get("to") or "").replace(" ", "").lower()


MAX_UNSUPPORTED = 8  # option tags named back in Unsupported
SUPPORTED = frozenset({"timer"})  # option tags an INVITE may Require (session_timers.py)


def bad_extension(request: SipRequest) -> SipResponse | None:
    """`420 Bad Extension` naming in `Unsupported` the option tags an INVITE `Require`s that
    we do not support (RFC 3261 §8.2.2.3): all but `timer` (`100rel`, RFC 3262, among them:
    docs/sip.md, "Session timers"); None when it requires nothing else."""
    tags = [t.strip() for v in request.headers.all("require") for t in v.split(",") if t.strip()]
    tags = [tag for tag in tags if tag.lower() not in SUPPORTED]
    if not tags:
        return None
    named = ", ".join(tag[:32] for tag in tags[:MAX_UNSUPPORTED])
    return response(request, 420, "Bad Extension", [("Unsupported", named)])


def bad_timer(request: SipRequest) -> SipResponse | None:
    """`422` (with our Min-SE) or `400` for a Session-Expires we refuse (session_timers.py)."""
    try:
        session_timer(request)
    except TimerError as exc:
        return response(request, exc.status, str(exc), exc.headers)
    return None
