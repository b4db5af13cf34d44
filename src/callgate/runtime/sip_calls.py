"""A registered SIP phone calls a callgate user: the SIP edge meets the signaling hub
(docs/sip.md, "Calls from phones").

For each authenticated INVITE the phone becomes, for the length of the call, one more signaling
device of its user, so the call goes through everything a browser's call goes through: the
callee must exist, the policy decides (a `recording_required` call is anchored and recorded, or
ends — fail closed), the CDR row is written before anyone rings, and the hub's timers apply.

Media: a `Bridge` with a WebRTC leg negotiated to the phone's G.711 codec (relay-only through our
TURN, with the calling user's TURN REST credentials, so call-bound relaying admits it) and a plain
RTP leg towards the phone. The WebRTC leg's offer is the device's `call.invite` SDP; the callee's
answer (or, for a recorded call, the recording anchor's) completes it. Payloads are forwarded,
never transcoded.

Signaling outcomes become SIP responses: ringing → 180; answered → 200 OK with our SDP (once
the answering device's media is up: `_accept_with_media`); denied
→ 403; ended before an answer → 404 (unknown user), 480 (nobody online, no answer), 486
(rejected, busy), 503 (recording unavailable, errors); after the answer the hub's end becomes our
BYE, and the phone's BYE or CANCEL becomes `call.hangup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from callgate.media.anchor import AnchorError, AnchorLeg, Bridge, offered_codecs
from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.dtmf import NO_EVENTS, DtmfToTones
from callgate.media.packets import PacketHandler
from callgate.media.rtp_leg import RtpLeg
from callgate.runtime.sip_dialout import DialOut, final_response
from callgate.runtime.sip_media import (
    answered_codec,
    bridge_codecs,
    check_call_media,
    check_media,
    encryption,
    take_offer,
)
from callgate.runtime.sip_quiet import HOLD_TIMEOUT, hold_over
from callgate.runtime.sip_reoffers import Reoffers
from callgate.signaling import messages as m
from callgate.signaling.anchoring import PHONE_AGENT
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.reasons import Reason
from callgate.signaling.ring_groups import MAX_MEMBERS, TOO_LARGE, group_callee
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.media_peers import aim
from callgate.sip.outbound import COMPLETED_ELSEWHERE, OutboundCall
from callgate.sip.reinvites import EXPIRED, PARTY_LOST
from callgate.sip.sdp import (
    EVENTS_PT,
    KEY_SALT,
    Crypto,
    SdpError,
    answer_key,
    audio_sdp,
    parse_audio,
)
from callgate.sip.trunks import EMERGENCY, normalise
from callgate.sip.uri import parse_name_addr, parse_sip_uri

log = logging.getLogger(__name__)

STATS_INTERVAL = 2.0  # the phone's device reports packet counts, as clients do
IceServersFor = Callable[[str], Sequence[Mapping[str, Any]]]
HolderIce = Callable[[str, str], Sequence[Mapping[str, Any]] | None]  # (user, call id)
# call.ended reasons (signaling/reasons.py) → SIP final responses before an answer
ENDED = {
    "unknown-user": (404, "Not Found"),
    "callee-offline": (480, "Temporarily Unavailable"),
    "no-answer": (480, "Temporarily Unavailable"),
    "rejected": (486, "Busy Here"),
    "busy": (486, "Busy Here"),
    "denied": (403, "Forbidden"),
    "recording-unavailable": (503, "Service Unavailable (recording unavailable)"),
    "recording-failed": (503, "Service Unavailable (recording failed)"),
    "unavailable": (503, "Service Unavailable"),
    TOO_LARGE: (503, "Service Unavailable (ring group over its size limit)"),
}
# call.denied by no rule of the policy's: the call policy, the ring group's members or the
# cluster bus could not be read (rule "unavailable"), or the group is too large
DENIED_BY = {"unavailable": "unavailable", TOO_LARGE: TOO_LARGE}


BYE_GRACE_S = 2.0  # s: how long `close` lets held calls' BYE transactions finish


class SipCalls:
    """The edge's call handler (`SipEdge.take_calls`)."""

    def __init__(
        self,
        hub: SignalingHub,
        user_exists: Callable[[str], bool],
        ice_servers: IceServersFor,
        media_ip: str | None = None,
        dial_out: DialOut | None = None,
        members_of: Callable[[str], Sequence[str]] = lambda group: (),
        holder_ice: HolderIce | None = None,
        max_members: int = MAX_MEMBERS,
        max_hold_s: float = 7200.0,
    ) -> None:
        """`dial_out`: phones dialling numbers through trunks (sip_dialout.py); `members_of`:
        the users a trunk DID's ring group rings (policy/groups.py); `max_hold_s`: how long a
        phone may hold a call before it ends `hold-timeout` (sip_quiet.py)."""
        self._max_hold_s = max_hold_s
        self._dial = dial_out
        self._members_of = members_of
        self._max_members = max_members
        self._hub = hub
        self._user_exists = user_exists
        self._ice_servers = ice_servers
        self._holder_ice = holder_ice  # several nodes: the call holder's relay (`_ring_phone`)
        self._media_ip = media_ip
        self._ids = itertools.count(1)
        self._edge: SipEdge | None = None
        self._phones: dict[str, asyncio.Task[None]] = {}  # device username -> its device task
        self._byes: set[asyncio.Task[None]] = set()  # `_end_held`'s BYEs, not cancelled with it

    def serve(self, edge: SipEdge) -> None:
        """Take the edge's INVITEs, and make each registered phone a device that can ring."""
        self._edge = edge
        edge.take_calls(self)
        edge.on_device = self.device_changed

    def device_changed(self, username: str, handle: str, present: bool) -> None:
        task = self._phones.get(username)
        if present and (task is None or task.cancelling()):  # a stopping one is replaced
            task = asyncio.get_running_loop().create_task(self._phone_device(username, handle))
            self._phones[username] = task
            task.add_done_callback(lambda done: self._forget_phone(username, done))
        elif not present and task is not None:
            task.cancel()

    def _forget_phone(self, username: str, task: asyncio.Task[None]) -> None:
        if self._phones.get(username) is task:  # not a newer one for the same phone
            del self._phones[username]

    async def close(self) -> None:
        for task in list(self._phones.values()):
            task.cancel()
        await asyncio.gather(*self._phones.values(), return_exceptions=True)
        if self._byes:  # a held call's BYE in its transaction: given time to finish
            _, late = await asyncio.wait(set(self._byes), timeout=BYE_GRACE_S)
            for task in late:
                task.cancel()

    async def invite(self, call: InboundCall) -> None:
        # validate: who is called, and can we take the phone's media
        try:
            uri = parse_sip_uri(call.request.uri)
            to = parse_sip_uri(parse_name_addr(call.request.headers.get("to") or "").uri)
        except ValueError:
            call.reject(400, "Bad Request-URI")
            return
        dialled = uri.user or to.user or ""
        dial = self._dial
        target = dial.target(call, dialled) if dial is not None else None
        if dial is not None and target is not None:  # a number, through a trunk
            await dial.run(call, target)
            return
        parties = self._parties(call, dialled)
        if parties is None:
            return  # refused, with the reason
        handle, display, agent, callee = parties
        # a DID that rings a group (only a trunk's: `_parties` never makes one from a phone)
        group = call.trunk.route_group(dialled) if call.trunk is not None else None
        assert self._edge is not None
        edge = self._edge
        taken = take_offer(edge, call)  # else 488 (sip_media.py)
        if taken is None:
            return
        offer, codec = taken
        media_ip = self._media_ip or call.peer.local[0]
        if ipaddress.ip_address(media_ip).is_unspecified or ":" in media_ip:
            log.warning("sip: set sip.media_ip (listening on %s, SDP needs an IPv4)", media_ip)
            call.reject(503, "Service Unavailable (no media address)")
            return
        # act: the media legs, then the phone (or trunk) as a device of its caller
        bridge = Bridge(lambda: self._ice_servers(handle))
        ours = None if offer.crypto is None else answer_key(offer.crypto)  # RFC 4568 §5.1.2
        srtp = (
            None if offer.crypto is None or ours is None else (offer.crypto.key_salt, ours.key_salt)
        )
        # silence towards the anchor until the phone's RTP flows: a recorded call rings only
        # once the recorder has the caller's first packets (media/caller_fill.py)
        fill = SilenceUntilMedia("phone", codec, bridge.forward)
        tones = _from_phone(codec, offer.events, fill.packet)
        rtp = RtpLeg("phone", tones.packet, codec, srtp, offer.events, edge.media.permits)
        tones.attach(rtp)  # audio straight on, unless a key is pressed
        call.on_key = tones.press  # keys sent by INFO (sip/dtmf_info.py)
        device: Device | None = None
        try:
            # the phone's codec first: a callee that has it gets the payloads unchanged; one
            # that has only another of the phone's codecs, or Opus, gets it transcoded
            web = bridge.leg("web", codec=codec, also=bridge_codecs(offer, codec))
            local = await rtp.open(media_ip)
            aim(rtp, offer, [call.peer.address[0]])  # none while held (c=0.0.0.0)
            bridge.attach(rtp)
            fill.start()
            web_offer = await web.offer()
            device, effects = await self._hub.connect(
                handle, display, True, address=call.peer.address[0], user_agent=agent
            )
            await self._hub.apply(effects)
            if group is not None:  # every member rings (signaling/ring_groups.py)
                call.recorded = True  # the hub writes this attempt's CDR from here on
                await self._hub.invite_group(
                    device, self._id(), group, web_offer, self._members_of, self._max_members
                )
            else:
                try:
                    invite = m.Invite(type="call.invite", id=self._id(), to=callee, sdp=web_offer)
                except ValueError:  # not a handle (numbers go to trunks, which are not here yet)
                    call.reject(404, "Not Found")
                    return
                call.recorded = True  # the hub writes this attempt's CDR from here on
                await self._hub.receive(device, invite, self._user_exists)
            origin = (secrets.randbits(31), 1)
            answer = audio_sdp(local[0], local[1], codec, ours, offer.events, origin=origin)
            reoffers = Reoffers(offer, call.request.body, codec, ours, local, origin, rtp, fill)
            reoffers.check = lambda sdp: check_call_media(edge, call, sdp, "re-offer")
            call.on_offer = reoffers.answer
            contact = f"sip:callgate@{call.peer.local[0]}:{call.peer.local[1]}"
            holding = asyncio.create_task(self._end_held(call, fill))
            try:
                await self._follow(call, device, web, rtp, answer, contact)
            finally:
                holding.cancel()
        except AnchorError as exc:
            log.warning("sip call %s: %s", call.call_id, exc)
            call.reject(503, "Service Unavailable (media)")
        finally:
            await fill.stop()
            if device is not None:
                await self._hub.disconnect(device)
                device.queue.put_nowait(None)
            await bridge.close()

    def _parties(self, call: InboundCall, dialled: str) -> tuple[str, str, str, str] | None:
        """(caller handle, display name, user agent, callee handle) of an INVITE, or None when
        it was refused here."""
        if call.trunk is not None:  # from the phone network, to one of the trunk's DIDs
            group = call.trunk.route_group(dialled)
            callee = group_callee(group) if group is not None else call.trunk.route(dialled)
            if callee is None:
                call.reject(404, "Not Found (no such DID)")
                return None
            claimed = parse_name_addr(call.request.headers.get("from") or "").uri
            try:
                number = normalise(parse_sip_uri(claimed).user or "")
            except ValueError:
                number = None
            # "+…" or "…@trunk": never a handle (those have neither), so never a user
            caller = number or f"anonymous@{call.trunk.name}"
            return caller, f"{caller} ({call.trunk.name})", f"sip-trunk:{call.trunk.name}", callee
        assert call.credential is not None
        callee = dialled.lower()
        if not callee:
            call.reject(404, "Not Found")
            return None
        if callee.lstrip("+") in EMERGENCY:
            # say so loudly: the phone must not look like it can reach emergency services
            log.error("sip: %s dialled emergency number %s: no trunk", handle_of(call), callee)
            call.reject(503, "Service Unavailable (emergency calls need a trunk: none here)")
            return None
        handle = call.credential.handle
        return handle, handle, "sip", callee

    async def _follow(
        self,
        call: InboundCall,
        device: Device,
        web: AnchorLeg,
        rtp: RtpLeg,
        answer: bytes,
        contact: str,
    ) -> None:
        """Carry the hub's messages to the phone and the phone's hang-up to the hub."""
        call_id: str | None = None
        answered = False
        stats: asyncio.Task[None] | None = None
        accepting: asyncio.Task[None] | None = None  # the 200 OK, once the media is up
        phone_gone = asyncio.create_task(call.ended.wait())
        try:
            while True:
                reading = asyncio.create_task(device.queue.get())
                done, _ = await asyncio.wait(
                    {reading, phone_gone}, return_when=asyncio.FIRST_COMPLETED
                )
                if phone_gone in done:
                    reading.cancel()
                    if call_id is not None:
                        await self._phone_gone(device, call_id, call.ended_by)
                    return
                message = reading.result()
                if message is None:  # the hub let go of the device
                    call.reject(503, "Service Unavailable")
                    await call.hang_up()
                    return
                kind = message.get("type")
                if kind == "ack" and message.get("call_id"):
                    call_id = str(message["call_id"])
                    if call.trunk is not None:  # the CDR says where the call came from, and
                        # how its media reaches us: SDES-SRTP or plain RTP (not the browser's)
                        self._hub.recorder.update(
                            call_id, direction="inbound", encryption=encryption(rtp)
                        )
                elif kind == "error":
                    call.reject(*_error_status(str(message.get("code"))))
                    return
                elif kind == "call.ringing":
                    call.ringing()
                elif kind == "call.candidate":
                    await web.add_candidate(message.get("candidate") or {})
                elif kind in ("call.answered", "call.recording") and message.get("sdp"):
                    # the callee's answer, or the recording anchor's (it answers first)
                    if not web.pc.remoteDescription:
                        await web.accept_answer(str(message["sdp"]))
                    if kind == "call.answered" and not answered:
                        answered = True
                        accepting = asyncio.create_task(
                            _accept_with_media(call, web, answer, contact)
                        )
                        stats = asyncio.create_task(self._report(device, call_id, web, rtp))
                elif kind == "call.answered" and not answered:
                    answered = True  # recorded call: the SDP came with call.recording
                    accepting = asyncio.create_task(_accept_with_media(call, web, answer, contact))
                    stats = asyncio.create_task(self._report(device, call_id, web, rtp))
                elif kind in ("call.ended", "call.denied"):
                    if accepting is not None:  # not yet 200: the final response says why
                        accepting.cancel()
                    reason = str(message.get("reason") or "")
                    if kind == "call.denied":
                        reason = DENIED_BY.get(str(message.get("rule")), "denied")
                    call.reject(*ENDED.get(reason, (480, "Temporarily Unavailable")))
                    await call.hang_up()
                    return
        finally:
            phone_gone.cancel()
            if accepting is not None:
                accepting.cancel()
            if stats is not None:
                stats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stats

    async def _report(
        self, device: Device, call_id: str | None, web: AnchorLeg, rtp: RtpLeg
    ) -> None:
        """Media state and packet counts for the phone's side, as a client would send them."""
        if call_id is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(web.connected.wait(), 30)
        media = m.Media(type="call.media", id=self._id(), call_id=call_id, state="connected")
        await self._hub.receive(device, media, self._user_exists)
        while True:
            # the phone's RTCP report on what we send it (its loss, jitter, round trip), and
            # our own receive statistics of its stream (media/rtcp_leg.py)
            party = rtp.rtcp.party if rtp.rtcp is not None else None
            lost_by_us = rtp.rtcp.packets_lost if rtp.rtcp is not None else 0
            inbound = m.StreamStats(
                kind="audio",
                direction="inbound",
                packets=web.received,
                packets_lost=party.packets_lost if party else 0,
                jitter_ms=party.jitter_ms if party else None,
                rtt_ms=party.rtt_ms if party else None,
            )
            outbound = m.StreamStats(
                kind="audio",
                direction="outbound",
                packets=rtp.received,
                packets_lost=max(-(2**23), lost_by_us),
            )
            streams = [inbound, outbound]
            report = m.Stats(type="call.stats", id=self._id(), call_id=call_id, streams=streams)
            await self._hub.receive(device, report, self._user_exists)
            await asyncio.sleep(STATS_INTERVAL)

    # -- calls to phones -----------------------------------------------------------------------

    async def _phone_device(self, username: str, handle: str) -> None:
        """The registered phone as a signaling device of `handle` while it is registered."""
        device, effects = await self._hub.connect(handle, handle, True, user_agent=PHONE_AGENT)
        try:
            await self._hub.apply(effects)
            while True:
                message = await device.queue.get()
                if message is None:
                    return
                if message.get("type") != "call.incoming":
                    continue
                try:
                    await self._ring_phone(device, username, message)
                except (OSError, ValueError, RuntimeError):
                    # one failed call (a socket, a bad SDP from the phone) must not take the
                    # phone offline: the hub ends that call by its timers
                    log.exception("sip call to %s failed", username)
        finally:
            await self._hub.disconnect(device)

    def _phone_ice(self, handle: str, call_id: str) -> Sequence[Mapping[str, Any]]:
        """The ICE servers of the bridge to a phone: the relay of the node holding the call when
        another node holds it (its caller's or its anchor's media is there, and a relay pairs
        only its own allocations), else this node's."""
        servers = self._holder_ice(handle, call_id) if self._holder_ice is not None else None
        return servers if servers else self._ice_servers(handle)

    async def _ring_phone(self, device: Device, username: str, incoming: dict[str, Any]) -> None:
        assert self._edge is not None
        call_id, offer_sdp = str(incoming["call_id"]), str(incoming.get("sdp") or "")
        caller = str((incoming.get("from") or {}).get("handle") or "")
        binding = self._edge.device_binding(username, device.handle)
        offered = offered_codecs(offer_sdp)
        # offered to the phone: G.722 and G.711 as the caller offers them (forwarded), else
        # PCMU, and the caller's Opus is transcoded (media/transcode.py)
        codecs = tuple(c for c in ("g722", "pcmu", "pcma") if c in offered)
        if not codecs and "opus" in offered:
            codecs = ("pcmu",)
        if binding is None or not codecs:
            why = "the phone is gone" if binding is None else "neither G.711 nor Opus offered"
            await self._reject(device, call_id, why)
            return
        media_ip = self._media_ip or binding.peer.local[0]
        if ipaddress.ip_address(media_ip).is_unspecified or ":" in media_ip:
            log.warning("sip: set sip.media_ip (listening on %s, SDP needs an IPv4)", media_ip)
            await self._reject(device, call_id, "no media address")
            return
        bridge = Bridge(lambda: self._phone_ice(device.handle, call_id))
        tones: list[DtmfToTones] = []  # made once the phone's answer says its codec
        fills: list[SilenceUntilMedia] = []  # likewise
        rtp = RtpLeg("phone", bridge.forward, codecs[0], permits=self._edge.media.permits)
        # a device whose credential says so is offered SRTP only (RTP/SAVP, our SDES key)
        credential = await asyncio.to_thread(self._edge.credentials.get, username)
        ours = Crypto(1, secrets.token_bytes(KEY_SALT)) if credential and credential.srtp else None
        call = self._edge.outbound(binding, caller)
        call.on_key = lambda key, ms: bool(tones) and tones[0].press(key, ms)  # INFO keys
        try:
            local = await rtp.open(media_ip)
            contact = f"sip:callgate@{binding.peer.local[0]}:{binding.peer.local[1]}"
            origin = (secrets.randbits(31), 1)  # our answer to its re-INVITEs: (id, 2)
            offer = audio_sdp(local[0], local[1], codecs, ours, EVENTS_PT, origin=origin)
            final = asyncio.ensure_future(final_response(call, offer, contact))
            while not final.done():
                message = await _next(device, final)
                if message is None and not final.done():
                    message = {"type": "call.ended"}  # the hub let go of the device
                if message is not None and message.get("type") == "call.ended":
                    # the caller gave up, or another device answered (RFC 3326 says which)
                    elsewhere = message.get("reason") == "answered-elsewhere"
                    await call.cancel(COMPLETED_ELSEWHERE if elsewhere else None)
                    await final
                    return
            reply = final.result()
            if reply is None or not 200 <= reply.status < 300:
                await self._reject(
                    device, call_id, f"phone: {reply.status if reply else 'timeout'}"
                )
                return
            try:
                answer = parse_audio(reply.body)
                codec = answered_codec(answer, codecs, ours)
                source = binding.peer.address[0]
                party = f"sip:{username}"
                answer = check_media(
                    self._edge, answer, "answer", party, call.call_id, source, source
                )
            except SdpError as exc:
                await call.hang_up()
                await self._reject(device, call_id, str(exc))
                return
            rtp.use(codec)
            if ours is not None and answer.crypto is not None:
                rtp.secure(answer.crypto.key_salt, ours.key_salt)  # RFC 4568 §6.1
            # silence towards the anchor while the phone holds the call (sip_reoffers.py)
            fill = SilenceUntilMedia("phone", codec, bridge.forward)
            fills.append(fill)
            tones.append(_from_phone(codec, EVENTS_PT, fill.packet))
            tones[0].attach(rtp)  # audio straight on, unless a key is pressed
            rtp.events = EVENTS_PT if answer.events == EVENTS_PT else None
            aim(rtp, answer, [binding.peer.address[0]])
            reoffers = Reoffers(answer, reply.body, codec, ours, local, (origin[0], 2), rtp, fill)
            edge = self._edge
            reoffers.check = lambda sdp: check_media(
                edge, sdp, "re-offer", party, call.call_id, source, source
            )
            call.on_offer = reoffers.answer  # the phone's re-INVITEs (sip/reinvites.py)
            # the phone's codec when the caller offered it (forwarded), else Opus (transcoded)
            web = bridge.leg("web", codec=codec, also=("opus",))
            bridge.attach(rtp)
            sdp = await web.answer(offer_sdp)
            answered = m.Answer(type="call.answer", id=self._id(), call_id=call_id, sdp=sdp)
            await self._hub.receive(device, answered, self._user_exists)
            stats = asyncio.create_task(self._report(device, call_id, web, rtp))
            holding = asyncio.create_task(self._end_held(call, fill))
            try:
                await self._talk(device, call, web, call_id)
            finally:
                stats.cancel()
                holding.cancel()
        except AnchorError as exc:
            log.warning("sip call %s to %s: %s", call_id, username, exc)
            await call.hang_up()
            await self._reject(device, call_id, "media")
        finally:
            self._edge.forget(call.call_id)
            for fill in fills:
                await fill.stop()
            await bridge.close()

    async def _talk(self, device: Device, call: OutboundCall, web: AnchorLeg, call_id: str) -> None:
        phone_gone = asyncio.ensure_future(call.ended.wait())
        try:
            while True:
                message = await _next(device, phone_gone)
                if message is None:
                    if phone_gone.done():
                        await self._phone_gone(device, call_id, call.ended_by)
                    else:
                        await call.hang_up()
                    return
                kind = message.get("type")
                if kind == "call.candidate":
                    await web.add_candidate(message.get("candidate") or {})
                elif kind == "call.ended":
                    await call.hang_up()
                    return
        finally:
            phone_gone.cancel()

    async def _end_held(self, call: InboundCall | OutboundCall, fill: SilenceUntilMedia) -> None:
        """BYE to a phone that held the call longer than `max_hold_s`, or that holds it and no
        longer answers (sip_quiet.py). The BYE runs in its own task: `hang_up` marks the call
        ended before its transaction finishes, and the call's end cancels this task; the BYE
        must still be retransmitted (RFC 3261 §17.1.2) until answered."""
        why = await hold_over(self._max_hold_s, (fill, call))
        bye = asyncio.get_running_loop().create_task(call.hang_up(why))
        self._byes.add(bye)
        bye.add_done_callback(self._byes.discard)
        await asyncio.shield(bye)

    async def _phone_gone(self, device: Device, call_id: str, ended_by: str) -> None:
        """The phone's side ended: its BYE is its user's hang-up; a session timer that ran out
        or a hold too long is the server's end (docs/sip.md, "Hold and session refresh")."""
        if ended_by in (EXPIRED, HOLD_TIMEOUT, PARTY_LOST):
            await self._hub.apply(self._hub.engine.end_call(call_id, Reason(ended_by)))
            return
        hangup = m.Hangup(type="call.hangup", id=self._id(), call_id=call_id)
        await self._hub.receive(device, hangup, self._user_exists)

    async def _reject(self, device: Device, call_id: str, why: str) -> None:
        reject = m.Reject(type="call.reject", id=self._id(), call_id=call_id, reason=why[:200])
        await self._hub.receive(device, reject, self._user_exists)

    def _id(self) -> str:
        return f"sip-{next(self._ids)}"


async def _next(device: Device, other: asyncio.Future[Any]) -> dict[str, Any] | None:
    """The device's next message, or None when `other` finished first (or the hub let go)."""
    reading = asyncio.ensure_future(device.queue.get())
    done, _ = await asyncio.wait({reading, other}, return_when=asyncio.FIRST_COMPLETED)
    if reading in done:
        return reading.result()
    reading.cancel()
    return None


def _from_phone(codec: str, events: int | None, forward: PacketHandler) -> DtmfToTones:
    """Where the phone's RTP goes: through `DtmfToTones`, as the WebRTC leg cannot carry
    RFC 4733 events (with telephone-events negotiated they reach it as tones), and keys the
    phone sends by INFO are `press`ed into its audio as tones."""
    return DtmfToTones(codec, NO_EVENTS if events is None else events, forward)


def handle_of(call: InboundCall) -> str:
    return call.credential.username if call.credential else "?"


def _error_status(code: str) -> tuple[int, str]:
    if code == m.RATE_LIMITED:
        return 503, "Service Unavailable (too many call attempts)"
    if code == m.BAD_REQUEST:
        return 400, "Bad Request"
    return 500, "Server Internal Error"


ANSWER_MEDIA_WAIT = 10.0  # s: the longest a 200 OK waits for the answering device's media


async def _accept_with_media(
    call: InboundCall, web: AnchorLeg, answer: bytes, contact: str
) -> None:
    """200 OK once the WebRTC leg to the device that answered carries media (at most
    ANSWER_MEDIA_WAIT s): the bridge drops what it cannot deliver yet, so a 200 OK sent at once
    would lose the phone's first words (and RFC 4733 keys) while ICE and DTLS finish on that
    leg. Cancelled when the call ends first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(web.connected.wait(), ANSWER_MEDIA_WAIT)
    call.accept(answer, contact)
