"""A SIP phone dials a number through a trunk (docs/sip.md, "Dialling out").

The callee is a number, not a user, so the call does not go through the signaling hub: the edge
calls the carrier itself (a back-to-back user agent) and bridges the two RTP legs at the server,
payloads unchanged. Authorize first: no dial-out without a rule (the trunk's dial_out_groups),
emergency numbers always, flagged. The CDR and its `sip.dialout` audit entry are written before
the carrier is called (sip/dialout.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from callgate.media.anchor import Bridge
from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.dtmf import NO_EVENTS, DtmfToTones
from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import RtpLeg
from callgate.policy.rules import Decision
from callgate.policy.store import PolicyStore
from callgate.recording.service import RecordingService
from callgate.recording.writer import RecordingFailure
from callgate.runtime.sip_live import ENDED_BY_ADMIN, TrunkCalls
from callgate.runtime.sip_media import (
    carrier_answer,
    carrier_key,
    carrier_sdp,
    check_call_media,
    check_media,
    downgrade_audit,
    encryption,
    take_offer,
)
from callgate.runtime.sip_quiet import MEDIA_LOST, Heard, hold_over, media_stopped
from callgate.runtime.sip_recorded import FAILED, UNAVAILABLE, NumberRecording
from callgate.runtime.sip_reoffers import Reoffers
from callgate.sip.attempts import disposition
from callgate.sip.dialout import DialOutRecords
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.media_peers import aim
from callgate.sip.message import SipResponse
from callgate.sip.outbound import OutboundCall
from callgate.sip.reinvites import EXPIRED, PARTY_LOST
from callgate.sip.sdp import (
    EVENTS_PT,
    AudioOffer,
    Crypto,
    SdpError,
    answer_key,
    audio_sdp,
    parse_audio,
)
from callgate.sip.trunk_limits import TrunkLimited
from callgate.sip.trunks import Dialled, Trunks

log = logging.getLogger(__name__)
# a leg of a dialled-out call, for its re-INVITEs: RTP, our address, our o= origin, its fill,
# our SDES key on that leg (None: plain RTP)
Side = tuple[RtpLeg, tuple[str, int], tuple[int, int], SilenceUntilMedia, Crypto | None]


async def final_response(call: OutboundCall, sdp: bytes, contact: str) -> SipResponse | None:
    """The phone's final response to our INVITE (None: it never answered, Timer B)."""
    final: SipResponse | None = None
    async for reply in call.invite(sdp, contact):
        if reply.status >= 200:
            final = reply
    return final


async def _never() -> None:
    await asyncio.Event().wait()


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to "may this user dial this number": why not (None: allowed), the policy
    rule that decided (None: the trunk's dial_out_groups), and how long the call may last."""

    refusal: str | None = None
    rule: str | None = None
    max_duration_s: int | None = None
    recording_required: bool = False  # the allowing rule says so (sip_recorded.py)


class DialOut:
    def __init__(
        self,
        edge: SipEdge,
        trunks: Trunks,
        groups_of: Callable[[str], tuple[str, ...]],
        records: DialOutRecords,
        media_ip: str | None,
        policy: PolicyStore | None = None,
        live: TrunkCalls | None = None,
        recordings: RecordingService | None = None,
        setup_timeout: float = 10.0,
        silence_timeout: float = 8.0,
        max_hold_s: float = 7200.0,
    ) -> None:
        """`recordings`: where calls under a recording rule are recorded (None: such calls
        end `recording-unavailable`); `setup_timeout`: how long the caller's first packets
        may take to reach the recorder; `silence_timeout`: how long the phone may send no RTP in
        an answered call before it ends `media-lost`; `max_hold_s`: how long either party may
        hold it before it ends `hold-timeout` (sip_quiet.py)."""
        self.recordings = recordings
        self.setup_timeout = setup_timeout
        self.silence_timeout = silence_timeout
        self.max_hold_s = max_hold_s
        # calls to numbers in the admin API's live view, phones' and softphones' (sip_live.py)
        self.live = live or TrunkCalls()
        self._policy = policy
        self._edge = edge
        self._trunks = trunks
        self._groups_of = groups_of
        self._records = records
        self._media_ip = media_ip

    def plan(self, dialled: str) -> Dialled | None:
        """The dial plan (sip/trunks.py): which trunk takes `dialled`, as what number."""
        return self._trunks.dial(dialled, self._edge.pings.down)

    def target(self, call: InboundCall, dialled: str) -> Dialled | None:
        """Where a phone's dialled number goes (the dial plan), or None: not a number."""
        if call.trunk is not None or call.credential is None:
            return None
        return self.plan(dialled)

    async def authorize(self, handle: str, dialled: Dialled) -> Permit:
        """Whether `handle` may dial `dialled` (docs/sip.md, "Policy for numbers"): emergency
        numbers always; a policy rule that denies it refuses it; one that allows it and speaks
        of numbers (direction outbound, or a callee number) permits it; otherwise only the
        trunk's dial_out_groups do — no dial-out without a rule, whatever the default action.
        A policy that cannot be read refuses (fail closed)."""
        if dialled.emergency:
            return Permit()
        try:
            groups, decision = await asyncio.to_thread(self._decide, handle, dialled.number)
        except Exception:
            log.exception("sip: dial-out decision for %s failed; refusing", handle)
            return Permit(refusal="the call policy is unavailable", rule="unavailable")
        if decision is not None and decision.rule_id is not None:
            rule, limit = decision.rule_id, decision.max_duration_s
            if not decision.allowed:
                return Permit(refusal=decision.reason or "denied by policy", rule=rule)
            if decision.dial_out or dialled.trunk.may_dial(groups):
                return Permit(None, rule, limit, decision.recording_required)
        elif dialled.trunk.may_dial(groups):
            return Permit()
        return Permit(refusal="no dial-out rule for this user")

    def _take_reoffers(
        self,
        call: InboundCall,
        out: OutboundCall,
        trunk: str,
        offer: AudioOffer,
        answer: AudioOffer,
        answer_body: bytes,
        codec: str,
        phone: Side,
        carrier: Side,
    ) -> None:
        """Each party's re-INVITEs in the answered call: the phone's and the carrier's, each
        judged for its own leg (sip_reoffers.py) with that leg's SDES keys (an SRTP carrier's
        re-offer must keep its key, and our answer carries ours); media addresses checked as
        at the start."""
        edge = self._edge
        leg, local, origin, fill, ours = phone
        reoffers = Reoffers(offer, call.request.body, codec, ours, local, origin, leg, fill)
        reoffers.check = lambda sdp: check_call_media(edge, call, sdp, "re-offer")
        call.on_offer = reoffers.answer
        leg, local, origin, fill, ours = carrier
        theirs = Reoffers(answer, answer_body, codec, ours, local, origin, leg, fill)
        source = out.peer.address[0]
        theirs.check = lambda sdp: check_media(
            edge, sdp, "re-offer", f"trunk:{trunk}", out.call_id, source
        )
        out.on_offer = theirs.answer

    def _decide(self, handle: str, number: str) -> tuple[tuple[str, ...], Decision | None]:
        groups = self._groups_of(handle)
        if self._policy is None:
            return groups, None
        at = datetime.fromtimestamp(time.time(), UTC)
        return groups, self._policy.decide_call(handle, number, at)

    async def run(self, call: InboundCall, dialled: Dialled) -> None:
        assert call.credential is not None
        records = self._records
        trunk, number, emergency = dialled.trunk, dialled.number, dialled.emergency
        handle = call.credential.handle
        # authorize: no dial-out without a rule; emergency numbers always (and flagged)
        permit = await self.authorize(handle, dialled)
        if permit.refusal is not None:
            call.reject(403, f"Forbidden ({permit.refusal})")
            return
        if emergency:
            log.warning(
                "sip: emergency call from %s to %s via trunk %s", handle, number, trunk.name
            )
        taken = take_offer(self._edge, call)  # else 488 (sip_media.py)
        if taken is None:
            return
        offer, codec = taken
        # The carrier is offered the phone's codecs in its order and picks (G.722 passes only
        # when both take it). A recorded call's codec is fixed before the carrier is called:
        # the phone's first G.711, which every carrier takes.
        codecs = offer.ours()
        if permit.recording_required:
            codec = next((c for c in codecs if c != "g722"), codec)
            codecs = (codec,)
        secure = carrier_key(trunk)  # our SDES key towards a trunk that requires SRTP
        media_ip = self._media_ip or call.peer.local[0]
        if ipaddress.ip_address(media_ip).is_unspecified or ":" in media_ip:
            call.reject(503, "Service Unavailable (no media address)")
            return
        ours = None if offer.crypto is None else answer_key(offer.crypto)  # RFC 4568 §5.1.2
        srtp = (
            None if offer.crypto is None or ours is None else (offer.crypto.key_salt, ours.key_salt)
        )
        recording = NumberRecording(self.recordings) if permit.recording_required else None
        # a recorded call's recorder is the bridge's observer (sip_recorded.py)
        bridge = Bridge(lambda: [], recording.on_packet if recording is not None else None)
        # silence for the recorder until the phone's RTP flows: the carrier is called only once
        # the caller's first packets are on disk (media/caller_fill.py)
        # (not started for a call that is not recorded: then only while the phone holds it,
        # sip_reoffers.py)
        fill = SilenceUntilMedia("caller", codec, bridge.forward)
        into_bridge = fill.packet
        # RFC 4733 events: offered to the carrier when the phone offered them; passed on as
        # events if the carrier takes them, else as tones (media/dtmf.py). A recorded call
        # carries them as tones, so the recording holds the key presses
        events = EVENTS_PT if offer.events is not None and recording is None else None
        # keys the phone sends by INFO become tones in its audio (sip/dtmf_info.py)
        tones = DtmfToTones(codec, offer.events or NO_EVENTS, into_bridge)
        phone_tones = [tones]  # made again if the carrier picks another of the phone's codecs

        def from_phone(packet: MediaPacket) -> None:
            phone_tones[0].packet(packet)

        call.on_key = lambda key, ms: phone_tones[0].press(key, ms)
        permits = self._edge.media.permits
        phone = RtpLeg("caller", from_phone, codec, srtp, offer.events, permits)
        tones.attach(phone)  # audio straight on, unless a key is pressed
        # keys the carrier sends by INFO become tones in its audio towards the phone
        from_carrier = DtmfToTones(codec, NO_EVENTS, bridge.forward)
        carrier = RtpLeg("callee", from_carrier.packet, codec, permits=permits)
        try:
            out = await self._edge.dial(
                trunk, dialled.carrier_number, trunk.caller_id or handle, dialled.emergency, handle
            )
            if out is not None:
                out.on_key = from_carrier.press  # sip/dtmf_info.py, edge_dialogs.py
        except TrunkLimited as limited:
            call.recorded = True
            _, reason = limited.cdr
            await asyncio.to_thread(
                records.open, secrets.token_hex(12), handle, number, trunk.name, emergency,
                call.peer.address[0], rule=permit.rule, refused=(reason, limited.refusal.reason),
            )  # fmt: skip
            call.reject(limited.refusal.status, limited.refusal.reason, limited.headers)
            return
        if out is None:
            call.reject(503, "Service Unavailable (no UDP listener for the trunk)")
            return
        record_id = uuid.uuid4().hex  # as calls between users: the recording API takes these
        carrier_fill: SilenceUntilMedia | None = None  # made once the carrier answers
        stop: asyncio.Future[Any] | None = None  # the admin API ended it (sip_live.py)
        lost: asyncio.Future[Any] | None = None  # the recording failed (sip_recorded.py)
        try:
            phone_local = await phone.open(media_ip)
            carrier_local = await carrier.open(media_ip)
            aim(phone, offer, [call.peer.address[0]])
            bridge.attach(phone)
            bridge.attach(carrier)
            call.recorded = True  # recorded here, not by the hub
            await asyncio.to_thread(
                records.open, record_id, handle, number, trunk.name, emergency,
                call.peer.address[0], rule=permit.rule, recording_required=recording is not None,
            )  # fmt: skip
            if recording is not None:
                device = call.credential.username
                try:
                    await recording.start(record_id, handle, device, number, permit.rule, codec)
                    fill.start()
                    await recording.caller_written(self.setup_timeout)
                except Exception as exc:  # fail closed: the carrier is never called
                    if isinstance(exc, RecordingFailure):
                        log.warning("sip: dial-out %s: recording unavailable: %s", record_id, exc)
                    else:  # a key, store or database error: the CDR is still finalized
                        log.exception("sip: dial-out %s: recording setup failed", record_id)
                    call.reject(503, "Service Unavailable (recording unavailable)")
                    failure = isinstance(exc, RecordingFailure)
                    detail = str(exc)[:120] if failure else "recording setup failed"
                    await asyncio.to_thread(
                        records.finish, record_id, "failed", "server", UNAVAILABLE, detail
                    )
                    return
                await asyncio.to_thread(records.anchored, record_id)
            lost = asyncio.ensure_future(recording.failed.wait() if recording else _never())
            contact = f"sip:callgate@{out.peer.local[0]}:{out.peer.local[1]}"
            origin = (secrets.randbits(31), 1)  # our answer to its re-INVITEs: (id, 2)
            final = asyncio.ensure_future(
                final_response(
                    out,
                    audio_sdp(
                        carrier_local[0], carrier_local[1], codecs, secure, events, origin=origin
                    ),
                    contact,
                )
            )
            call.ringing()
            live = self.live.open(record_id, handle, number, trunk.name, "rtp/rtp")
            stop = stopped = asyncio.ensure_future(live.stop.wait())
            phone_gone = asyncio.ensure_future(call.ended.wait())
            await asyncio.wait(
                {final, phone_gone, stopped, lost}, return_when=asyncio.FIRST_COMPLETED
            )
            if not final.done() and lost.done() and recording is not None:
                phone_gone.cancel()  # the recording failed while the carrier rang
                await out.cancel()
                if (reply := await final) is not None and 200 <= reply.status < 300:
                    await out.hang_up()
                call.reject(503, "Service Unavailable (recording failed)")
                await asyncio.to_thread(
                    records.finish, record_id, "failed", "server", FAILED, recording.failure
                )
                return
            if not final.done():  # the phone gave up (CANCEL), or an admin, while it rang
                phone_gone.cancel()
                await out.cancel()
                reply = await final
                if reply is not None and 200 <= reply.status < 300:
                    await out.hang_up()  # the answer crossed our CANCEL (RFC 3261 §9.1)
                if live.admin is not None:
                    call.reject(480, "Temporarily Unavailable (ended by an administrator)")
                by, why = (live.ended_by, ENDED_BY_ADMIN) if live.admin else ("caller", "cancelled")
                await asyncio.to_thread(
                    records.finish, record_id, "cancelled", by, why, "", live.admin
                )
                return
            phone_gone.cancel()
            reply = final.result()
            if reply is None or not 200 <= reply.status < 300:
                status, reason = (
                    (408, "Request Timeout") if reply is None else (reply.status, reply.reason)
                )
                call.reject(status, reason)
                await asyncio.to_thread(
                    records.finish, record_id, disposition(status), "callee", f"sip {status}"
                )
                return
            source = out.peer.address[0]  # else ForbiddenMedia, audited: BYE, 502 below
            with carrier_sdp(out.call_id):  # any error: SdpError, the BYE and CDR below
                answer = parse_audio(reply.body)
                answer = check_media(
                    self._edge, answer, "answer", f"trunk:{trunk.name}", out.call_id, source
                )
                plain = downgrade_audit(self._edge, trunk.name, out.call_id, record_id)
                chosen = carrier_answer(answer, codecs, secure, carrier, emergency, plain)
            if chosen != codec:  # the phone offered it too: both legs use it, unchanged
                codec = chosen
                phone.use(codec)
                carrier.use(codec)
                fill = SilenceUntilMedia("caller", codec, bridge.forward)  # not recorded
                tones = DtmfToTones(codec, offer.events or NO_EVENTS, fill.packet)
                tones.attach(phone)
                phone_tones[0] = tones
            # silence towards the anchor while the carrier holds the call (sip_reoffers.py)
            carrier_fill = SilenceUntilMedia("callee", codec, bridge.forward)
            from_carrier = DtmfToTones(codec, NO_EVENTS, carrier_fill.packet)
            carrier.on_audio = carrier.on_event = from_carrier.packet
            out.on_key = from_carrier.press
            if events is not None and answer.events == events:
                carrier.events = events  # the carrier takes events: forwarded as they are
                tones.convert = False
            aim(carrier, answer, [out.peer.address[0]])
            if lost.done() and recording is not None:  # failed as the carrier answered:
                await out.hang_up()  # the phone is never connected to an unrecorded call
                call.reject(503, "Service Unavailable (recording failed)")
                await asyncio.to_thread(
                    records.finish, record_id, "failed", "server", FAILED, recording.failure
                )
                return
            phone_origin = (secrets.randbits(31), 1)
            phone_answer = audio_sdp(
                phone_local[0], phone_local[1], codec, ours, offer.events, origin=phone_origin
            )
            # our key towards the carrier, unless an emergency call was answered plain
            keyed = secure if answer.crypto is not None else None
            self._take_reoffers(call, out, trunk.name, offer, answer, reply.body, codec,
                                (phone, phone_local, phone_origin, fill, ours),
                                (carrier, carrier_local, (origin[0], 2), carrier_fill, keyed))  # fmt: skip
            call.accept(phone_answer, contact)
            if recording is not None:
                recording.answered(bridge, codec)
            await asyncio.to_thread(records.answered, record_id, encryption(carrier))
            self.live.answered(live)
            phone_ended = asyncio.ensure_future(call.ended.wait())
            carrier_ended = asyncio.ensure_future(out.ended.wait())
            # a phone holding the call sends nothing: the silence filled in for it counts
            heard = Heard(phone, fill)
            quiet = asyncio.ensure_future(media_stopped(heard, self.silence_timeout))
            held = asyncio.ensure_future(
                hold_over(self.max_hold_s, (fill, call), (carrier_fill, out))
            )
            await asyncio.wait(
                {phone_ended, carrier_ended, stopped, lost, quiet, held},
                timeout=permit.max_duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            phone_ended.cancel()
            carrier_ended.cancel()
            quiet.cancel()
            held.cancel()
            if lost.done() and recording is not None:  # fail closed: the call ends
                await out.hang_up()
                await call.hang_up()
                await asyncio.to_thread(
                    records.finish, record_id, "answered", "server", FAILED, recording.failure
                )
                return
            if live.admin is not None and not call.ended.is_set() and not out.ended.is_set():
                await out.hang_up()  # BYE both ways (the admin API's end)
                await call.hang_up()
                await asyncio.to_thread(
                    records.finish, record_id, "answered", live.ended_by, ENDED_BY_ADMIN, "",
                    live.admin,
                )  # fmt: skip
                return
            if not call.ended.is_set() and not out.ended.is_set():  # max_duration_s or quiet
                await out.hang_up()
                await call.hang_up()
                why = "max-duration"
                if quiet.done() and not quiet.cancelled():
                    why = MEDIA_LOST
                elif held.done() and not held.cancelled():
                    why = held.result()  # hold-timeout, party-lost
                await asyncio.to_thread(records.finish, record_id, "answered", "server", why)
                return
            by = "caller" if call.ended.is_set() and call.ended_by != "us" else "callee"
            await (out.hang_up() if by == "caller" else call.hang_up())
            why = "hangup"
            for ended in (call.ended_by, out.ended_by):  # the server ended it for a party:
                if ended in (EXPIRED, PARTY_LOST):  # session timer, 2xx unACKed (reinvites.py)
                    by, why = "server", ended
            await asyncio.to_thread(records.finish, record_id, "answered", by, why)
        except SdpError as exc:  # the carrier's answer: unusable, or a forbidden address
            await out.hang_up()  # its 2xx was ACKed (outbound.py): BYE (RFC 3261 §13.2.2.4)
            call.reject(502, "Bad Gateway (carrier SDP)")
            log.warning("sip: dial-out %s via %s: %s", record_id, trunk.name, exc)
            await asyncio.to_thread(
                records.finish, record_id, "failed", "server", "setup-failed", str(exc)[:120]
            )
        finally:
            self.live.close(record_id)
            if stop is not None:
                stop.cancel()
            if lost is not None:
                lost.cancel()
            self._edge.forget(out.call_id)
            await fill.stop()
            if carrier_fill is not None:
                await carrier_fill.stop()
            await bridge.close()
            if recording is not None:
                await recording.close()
