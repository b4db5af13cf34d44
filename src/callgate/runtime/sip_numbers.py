"""A browser or CLI softphone dials a telephone number (docs/sip.md, "Dialling numbers").

`callgate call +44…` and the softphone's dial box send `call.invite` with a number as `to`
(`signaling.hub.is_number`); the hub hands it, and every later request about that call, here.
The call does not go through the call engine (its callee is no user): this module does what the
engine does for it, in the order validate → authorize → act → respond:

- the dial plan picks the trunk (`Trunks.dial`: routes, national numbers, emergency codes); no
  trunk takes the number: CDR `failed`/`no-route`, `call.ended` `no-route`;
- the server decides whether the user may dial it (`DialOut.authorize`, the same check as for a
  desk phone dialling out): refused: CDR `denied`/`policy-denied` with the rule, `call.denied`
  and `call.ended` `policy-denied` — the client is never asked;
- the CDR row (direction `outbound`, caller the user, callee the E.164 number, the trunk) and its
  `sip.dialout` audit entry are written before the carrier is called;
- the edge INVITEs the carrier (`SipEdge.dial`) with a plain RTP leg at the server offering the
  G.711 codec the softphone offered; the carrier's 180 becomes `call.ringing`, its 200 OK the
  WebRTC answer of the media bridge (relay-only, through our TURN under the call's own TURN user
  `@pstn-CALLID`, which call-bound relaying admits for the caller only: `together`), and its
  refusals `call.ended` with a reason; payloads pass unchanged;
- the carrier's re-INVITEs (refresh, hold, a new address) are answered as in every call
  (sip_reoffers.py), its silence filled in while it holds the call;
- the softphone's `call.hangup` (or its socket closing) becomes CANCEL or BYE, the carrier's BYE
  `call.ended` `hangup`; a rule's `max_duration_s` ends the call with `max-duration`, a carrier
  silent for `calls.silence_timeout` `media-lost`, one holding it for `calls.max_hold_s`
  `hold-timeout`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callgate.media.anchor import AnchorError, AnchorLeg, Bridge, offered_codecs
from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.dtmf import NO_EVENTS, DtmfToTones
from callgate.media.rtp_leg import RtpLeg
from callgate.recording.writer import RecordingFailure
from callgate.runtime.sip_dialout import DialOut, Permit
from callgate.runtime.sip_live import ENDED_BY_ADMIN, TrunkCall
from callgate.runtime.sip_media import (
    carrier_answer,
    carrier_key,
    carrier_sdp,
    check_media,
    downgrade_audit,
    encryption,
)
from callgate.runtime.sip_quiet import MEDIA_LOST, Heard, hold_over, media_stopped
from callgate.runtime.sip_recorded import FAILED, UNAVAILABLE, NumberRecording
from callgate.runtime.sip_reoffers import Reoffers
from callgate.signaling import messages as m
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.live import LiveCall
from callgate.sip.attempts import disposition
from callgate.sip.dialout import DialOutRecords
from callgate.sip.edge import SipEdge
from callgate.sip.media_peers import aim
from callgate.sip.message import SipResponse
from callgate.sip.outbound import OutboundCall
from callgate.sip.reinvites import EXPIRED, PARTY_LOST
from callgate.sip.sdp import SdpError, audio_sdp, parse_audio
from callgate.sip.trunk_limits import TrunkLimited
from callgate.sip.trunks import Dialled

log = logging.getLogger(__name__)

TURN_USER_PREFIX = "@pstn-"  # "@" is never in a handle: no user can pose as a call's bridge
IceServersFor = Callable[[str], Sequence[Mapping[str, Any]]]
# the carrier's final refusal → the reason the softphone hears (RFC 3261 §21)
CARRIER_REASONS = {
    404: "unknown-number",
    484: "unknown-number",
    486: "busy",
    600: "busy",
    603: "rejected",
    408: "no-answer",
    480: "no-answer",
    487: "cancelled",
}


@dataclass(eq=False)
class _Call:
    call_id: str
    device: Device
    dialled: Dialled
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_reason: str = "hangup"  # why the softphone's side ended
    candidates: list[dict[str, Any]] = field(default_factory=list)
    web: Any = None  # the bridge's WebRTC leg (AnchorLeg) once it exists
    live: TrunkCall | None = None  # its entry in the admin API's live calls (sip_live.py)

    def admin_end(self) -> None:
        """An administrator ended it (the live entry's `stop`): end the softphone's side."""
        self.ended_reason = ENDED_BY_ADMIN
        self.ended.set()

    def by(self, party: str) -> str:
        """Who ended it for the CDR: `party`, or `admin:HANDLE`."""
        return self.live.ended_by if self.live is not None and self.live.admin else party


class NumberCalls:
    """The hub's `numbers` (signaling.hub.NumberCalls)."""

    def __init__(
        self,
        hub: SignalingHub,
        edge: SipEdge,
        dial: DialOut,
        records: DialOutRecords,
        ice_servers: IceServersFor,
        media_ip: str | None,
    ) -> None:
        self._hub = hub
        self._edge = edge
        self._dial = dial
        self._records = records
        self._ice_servers = ice_servers
        self._media_ip = media_ip
        self._calls: dict[str, _Call] = {}

    # -- what the hub asks -------------------------------------------------------------------------

    def owns(self, call_id: str) -> bool:
        return call_id in self._calls

    def live_calls(self) -> list[LiveCall]:
        """Calls to numbers, from softphones and desk phones (they share `DialOut.live`)."""
        return self._dial.live.live_calls()

    async def end_call(self, call_id: str, admin: str) -> bool:
        return self._dial.live.end(call_id, admin)

    def together(self, user_a: str, user_b: str) -> bool:
        """The bridge of a live number call and that call's caller (TURN call-bound guard)."""
        for bridge, other in ((user_a, user_b), (user_b, user_a)):
            if bridge.startswith(TURN_USER_PREFIX):
                call = self._calls.get(bridge.removeprefix(TURN_USER_PREFIX))
                return call is not None and other == call.device.handle
        return False

    async def disconnected(self, device: Device) -> None:
        for call in list(self._calls.values()):
            if call.device is device and not call.ended.is_set():
                call.ended_reason = "caller-disconnected"
                call.ended.set()

    async def invite(self, device: Device, message: m.Invite) -> None:
        # validate: a number some trunk takes, and media the carrier side can take
        call_id = uuid.uuid4().hex
        handle, agent = device.handle, device.user_agent or "web"
        if any(c.device is device for c in self._calls.values()):
            self._hub.send(device, m.error_message(message.id, m.CONFLICT, "in a call"))
            return
        self._hub.send(device, m.ack_message(message.id, call_id=call_id))
        dialled = self._dial.plan(message.to)
        if dialled is None:
            why = ("no-route", "no trunk takes this number")
            await self._refuse(device, call_id, message.to[:64], None, agent, why)
            return
        number, trunk = dialled.number, dialled.trunk.name
        # authorize: on the server, from the user's groups and the policy
        permit = await self._dial.authorize(handle, dialled)
        if permit.refusal is not None:
            why = ("policy-denied", permit.refusal)
            rule = permit.rule or f"trunk:{trunk}"
            self._hub.send(device, m.denied_message(call_id, permit.refusal, rule))
            await self._refuse(device, call_id, number, trunk, agent, why, rule)
            return
        codec = _g711(message.sdp)
        if codec is None and "opus" in offered_codecs(message.sdp):
            codec = "pcmu"  # to the carrier; the softphone's Opus is transcoded (transcode.py)
        if codec is None:
            why = ("setup-failed", "the offer has neither G.711 (PCMU/PCMA) nor Opus")
            await self._refuse(device, call_id, number, trunk, agent, why, permit.rule)
            return
        if dialled.emergency:
            log.warning("sip: emergency call from %s to %s via trunk %s", handle, number, trunk)
        # act: the record first, then the carrier
        try:
            await asyncio.to_thread(
                self._records.open, call_id, handle, number, trunk, dialled.emergency,
                device.address, user_agent=agent, rule=permit.rule,
                recording_required=permit.recording_required,
            )  # fmt: skip
        except Exception:  # no record, no call (compliance fails closed)
            log.exception("sip: call record of number call %s not written; ending it", call_id)
            self._hub.send(device, m.ended_message(call_id, "setup-failed", "server"))
            return
        call = self._calls[call_id] = _Call(call_id, device, dialled)
        call.live = self._dial.live.open(call_id, handle, number, trunk, "relay/rtp")
        watch = asyncio.get_running_loop().create_task(_on_stop(call.live, call.admin_end))
        self._hub.keep(watch)
        task = asyncio.get_running_loop().create_task(
            self._run(call, codec, message.sdp, permit), name=f"pstn-{call_id}"
        )
        self._hub.keep(task)

    async def _refuse(
        self,
        device: Device,
        call_id: str,
        number: str,
        trunk: str | None,
        agent: str,
        why: tuple[str, str],
        rule: str | None = None,
    ) -> None:
        """Record an attempt refused before the carrier was called, and end it (the softphone
        hears the end even when the record cannot be written: it is logged)."""
        try:
            await asyncio.to_thread(
                self._records.open, call_id, device.handle, number, trunk, False, device.address,
                user_agent=agent, rule=rule, refused=why,
            )  # fmt: skip
        except Exception:
            log.exception("sip: call record of refused number call %s not written", call_id)
        self._hub.send(device, m.ended_message(call_id, why[0], "server"))

    async def receive(self, device: Device, message: m.ClientMessage) -> None:
        call = self._calls.get(getattr(message, "call_id", ""))
        if call is None or call.device is not device:
            self._hub.send(device, m.error_message(message.id, m.NOT_FOUND, "no such call"))
            return
        if isinstance(message, m.Hangup | m.Reject):
            call.ended_reason = "hangup"
            call.ended.set()
        elif isinstance(message, m.Candidate):
            candidate = message.candidate.model_dump(exclude_none=True)
            if call.web is not None:
                await call.web.add_candidate(candidate)
            elif len(call.candidates) < 64:
                call.candidates.append(candidate)
        elif isinstance(message, m.Answer):
            self._hub.send(device, m.error_message(message.id, m.BAD_REQUEST, "the caller"))
            return
        self._hub.send(device, m.ack_message(message.id))  # media and stats reports too

    # -- the call ----------------------------------------------------------------------------------

    async def _run(self, call: _Call, codec: str, offer_sdp: str, permit: Permit) -> None:
        dialled, handle = call.dialled, call.device.handle
        trunk = dialled.trunk
        # a recorded call's recorder is the bridge's observer (sip_recorded.py)
        recording = NumberRecording(self._dial.recordings) if permit.recording_required else None
        bridge = Bridge(
            lambda: self._ice_servers(TURN_USER_PREFIX + call.call_id),
            recording.on_packet if recording is not None else None,
        )
        # keys the carrier sends by INFO become tones in its audio towards the softphone; its
        # silence filled in while it holds the call (sip_reoffers.py)
        fill = SilenceUntilMedia("callee", codec, bridge.forward)
        from_carrier = DtmfToTones(codec, NO_EVENTS, fill.packet)
        carrier = RtpLeg("callee", from_carrier.packet, codec, permits=self._edge.media.permits)
        outcome = ("failed", "server", "setup-failed", "no UDP listener for the trunk")
        out: OutboundCall | None = None
        lost = asyncio.ensure_future(_lost(recording))
        try:
            out = await self._edge.dial(
                trunk, dialled.carrier_number, trunk.caller_id or handle, dialled.emergency, handle
            )
            if out is not None:
                out.on_key = from_carrier.press  # sip/dtmf_info.py, edge_dialogs.py
                outcome = await self._connect(
                    call, out, bridge, (carrier, fill), codec, offer_sdp, permit, recording, lost
                )
        except TrunkLimited as limited:
            final, reason = limited.cdr
            outcome = (final, "server", reason, limited.refusal.reason)
        except (AnchorError, OSError, SdpError) as exc:
            log.warning("sip: number call %s: %s", call.call_id, exc)
            if out is not None:
                await out.hang_up()
            outcome = ("failed", "server", "setup-failed", str(exc)[:120])
        finally:
            lost.cancel()
            self._calls.pop(call.call_id, None)
            self._dial.live.close(call.call_id)
            if call.live is not None:
                call.live.stop.set()  # its watcher ends
            if out is not None:
                self._edge.forget(out.call_id)
            await fill.stop()
            await bridge.close()
            if recording is not None:
                await recording.close()
            final, by, reason, detail = outcome
            admin = call.live.admin if call.live is not None else None
            told = "server" if admin else by  # as the engine tells parties of an admin's end
            self._hub.send(call.device, m.ended_message(call.call_id, reason, told))
            try:
                await asyncio.to_thread(
                    self._records.finish, call.call_id, final, by, reason, detail, admin
                )
            except Exception:
                log.exception("sip: call record of number call %s not finalized", call.call_id)

    async def _connect(
        self,
        call: _Call,
        out: OutboundCall,
        bridge: Bridge,
        legs: tuple[RtpLeg, SilenceUntilMedia],
        codec: str,
        offer_sdp: str,
        permit: Permit,
        recording: NumberRecording | None,
        lost: asyncio.Future[None],
    ) -> tuple[str, str, str, str]:
        """Ring the carrier, then talk; (disposition, ended by, reason, detail) of the end.
        `legs`: the carrier's RTP and the silence filled in while it holds the call; `lost`:
        done when the call's recording fails."""
        carrier, fill = legs
        media_ip = self._media_ip or out.peer.local[0]
        if ipaddress.ip_address(media_ip).is_unspecified or ":" in media_ip:
            return "failed", "server", "setup-failed", "set sip.media_ip"
        local = await carrier.open(media_ip)
        web = call.web = bridge.leg("caller", codec=codec, also=("opus",))
        for candidate in call.candidates:
            await web.add_candidate(candidate)
        sdp: str | None = None
        if recording is not None:  # fail closed: the carrier is called once the caller is on disk
            try:
                sdp = await self._recorded(call, web, codec, offer_sdp, permit, recording)
            except RecordingFailure as exc:
                log.warning("sip: number call %s: recording unavailable: %s", call.call_id, exc)
                return "failed", "server", UNAVAILABLE, str(exc)[:120]
        contact = f"sip:callgate@{out.peer.local[0]}:{out.peer.local[1]}"
        secure = carrier_key(call.dialled.trunk)  # RTP/SAVP, our SDES key: trunk srtp required
        origin = (secrets.randbits(31), 1)  # our answers to its re-INVITEs: (id, 2) on
        offer = audio_sdp(local[0], local[1], codec, secure, origin=origin)
        final = asyncio.ensure_future(self._carrier_final(call, out, offer, contact))
        gone = asyncio.ensure_future(call.ended.wait())
        ringing: set[asyncio.Future[Any]] = {final, gone, lost}
        await asyncio.wait(ringing, return_when=asyncio.FIRST_COMPLETED)
        if not final.done() and lost.done() and recording is not None:
            gone.cancel()
            await out.cancel()  # the recording failed while the carrier rang
            if (reply := await final) is not None and 200 <= reply.status < 300:
                await out.hang_up()
            return "failed", "server", FAILED, recording.failure[:120]
        if not final.done():  # the caller gave up while the carrier rang
            await out.cancel()
            reply = await final
            if reply is not None and 200 <= reply.status < 300:
                await out.hang_up()  # the answer crossed our CANCEL (RFC 3261 §9.1)
            if call.ended_reason == ENDED_BY_ADMIN:
                return "cancelled", call.by("server"), ENDED_BY_ADMIN, ""
            return "cancelled", "caller", "cancelled", call.ended_reason
        gone.cancel()
        reply = final.result()
        if reply is None or not 200 <= reply.status < 300:
            status = 408 if reply is None else reply.status
            text = "no answer" if reply is None else reply.reason
            why = CARRIER_REASONS.get(status, "setup-failed")
            return disposition(status), "callee", why, f"sip {status} {text}"[:120]
        trunk, source = f"trunk:{call.dialled.trunk.name}", out.peer.address[0]
        with carrier_sdp(out.call_id):  # any error: SdpError, the BYE and CDR of number_call
            answer = parse_audio(reply.body)
            answer = check_media(self._edge, answer, "answer", trunk, out.call_id, source)
            plain = downgrade_audit(self._edge, call.dialled.trunk.name, out.call_id, call.call_id)
            carrier_answer(answer, (codec,), secure, carrier, call.dialled.emergency, plain)
        aim(carrier, answer, [out.peer.address[0]])
        # the carrier's re-INVITEs: refresh, hold, move (sip_reoffers.py, sip/reinvites.py)
        # (keeping the carrier's SRTP key and ours, unless an emergency call was answered plain)
        keyed = secure if answer.crypto is not None else None
        reoffers = Reoffers(answer, reply.body, codec, keyed, local, (origin[0], 2), carrier, fill)
        edge = self._edge
        reoffers.check = lambda sdp: check_media(edge, sdp, "re-offer", trunk, out.call_id, source)
        out.on_offer = reoffers.answer
        bridge.attach(carrier)
        if sdp is None:
            sdp = await web.answer(offer_sdp)
        if lost.done() and recording is not None:  # failed as the carrier answered: never
            await out.hang_up()  # connect the softphone to an unrecorded call
            return "failed", "server", FAILED, recording.failure[:120]
        if recording is not None:
            recording.answered(bridge, web.codec, codec)
        await asyncio.to_thread(self._records.answered, call.call_id, encryption(carrier))
        if call.live is not None:
            self._dial.live.answered(call.live)
        self._hub.send(call.device, m.answered_message(call.call_id, sdp))
        return await self._talk(call, out, (carrier, fill), permit, lost, recording)

    async def _recorded(
        self,
        call: _Call,
        web: AnchorLeg,
        codec: str,
        offer_sdp: str,
        permit: Permit,
        recording: NumberRecording,
    ) -> str:
        """A recorded call's first steps, as for calls between users (docs/recording.md, "Call
        flow"): the recording, the softphone's leg answered at once (`call.recording` with our
        answer: its media comes to the server first), then its first packets on disk; the
        answer, or RecordingFailure."""
        device = call.device
        await recording.start(
            call.call_id, device.handle, device.device_id, call.dialled.number, permit.rule,
            web.pick(offer_sdp), codec,
        )  # fmt: skip
        assert recording.recorder is not None
        sdp = await web.answer(offer_sdp)
        notice = m.recording_message(
            call.call_id, recording.recorder.recording_id, permit.rule, sdp
        )
        self._hub.send(device, notice)
        await recording.caller_written(self._dial.setup_timeout)
        await asyncio.to_thread(self._records.anchored, call.call_id)
        return sdp

    async def _carrier_final(
        self, call: _Call, out: OutboundCall, sdp: bytes, contact: str
    ) -> SipResponse | None:
        final: SipResponse | None = None
        ringing = False
        async for reply in out.invite(sdp, contact):
            if reply.status >= 200:
                final = reply
            elif reply.status in (180, 183) and not ringing:
                ringing = True
                self._hub.send(call.device, m.ringing_message(call.call_id, 1))
        return final

    async def _talk(
        self,
        call: _Call,
        out: OutboundCall,
        legs: tuple[RtpLeg, SilenceUntilMedia],
        permit: Permit,
        lost: asyncio.Future[None],
        recording: NumberRecording | None,
    ) -> tuple[str, str, str, str]:
        """Until one side ends it; a carrier that sends no RTP for `calls.silence_timeout`
        is gone and the call ends `media-lost`; one that holds the call (the silence filled in
        counts as its media) longer than `calls.max_hold_s` `hold-timeout` (sip_quiet.py)."""
        carrier, fill = legs
        quiet = asyncio.ensure_future(
            media_stopped(Heard(carrier, fill), self._dial.silence_timeout)
        )
        held = asyncio.ensure_future(hold_over(self._dial.max_hold_s, (fill, out)))
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(call.ended.wait()),
            asyncio.ensure_future(out.ended.wait()),
            quiet,
            held,
        }
        limit = permit.max_duration_s
        try:
            await asyncio.wait({*waits, lost}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if lost.done() and recording is not None:  # fail closed: the call ends
            await out.hang_up()
            return "answered", "server", FAILED, recording.failure[:120]
        if call.ended.is_set():
            await out.hang_up()
            return "answered", call.by("caller"), call.ended_reason, ""
        if out.ended.is_set():
            if out.ended_by in (EXPIRED, PARTY_LOST):  # we ended it for the carrier
                return "answered", "server", out.ended_by, ""  # (sip/reinvites.py)
            return "answered", "callee", "hangup", ""
        await out.hang_up()
        if held.done() and not held.cancelled():
            return "answered", "server", held.result(), "the carrier's hold"  # or it is gone
        if quiet.done() and not quiet.cancelled():
            return (
                "answered",
                "server",
                MEDIA_LOST,
                f"no RTP from the carrier for {self._dial.silence_timeout:g} s",
            )
        # the rule's max_duration_s
        return "answered", "server", "max-duration", f"{limit} s"


async def _lost(recording: NumberRecording | None) -> None:
    """Returns when the call's recording fails (never for a call not recorded)."""
    await (recording.failed if recording is not None else asyncio.Event()).wait()


async def _on_stop(live: TrunkCall, then: Callable[[], None]) -> None:
    """`then()` when an administrator ends the call (nothing when it ends otherwise)."""
    await live.stop.wait()
    if live.admin is not None:
        then()


def _g711(offer_sdp: str) -> str | None:
    upper = offer_sdp.upper()
    for codec in ("PCMU", "PCMA"):
        if f" {codec}/8000" in upper:
            return codec.lower()
    return None
