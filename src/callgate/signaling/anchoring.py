"""Recorded calls: the signaling side of the media anchor (docs/recording.md, "Call flow").

For a call whose policy grant says `recording_required`, the engine holds the call before
ringing and the hub hands it here:

1. start the recording (master key, file, row): if that fails the call ends
   `recording-unavailable`, nobody rung;
2. answer the caller's offer with an anchor leg; the caller gets `call.recording` with that
   answer and connects to the anchor (relay-only, through our TURN);
3. once the caller's leg is connected and a chunk holding its first packets is fsynced, the
   anchor offers a second leg to the callee, who is rung with that offer (`ring_anchored`);
4. the callee's answer goes to that leg; from then on each party's packets are recorded and
   forwarded to the other unchanged.

A recorder failure (write, fsync, disk, a silent leg) ends the call `recording-failed`; the end
of the call closes the recording (last chunk, metadata, audit entry).

A ring group's call (a trunk DID, signaling/ring_groups.py) goes the same way: every member's
devices ring with the one callee leg's offer, the first answer takes that leg (the others never
connect to it), and the recording's callee becomes the member who answered (`_name_member`).

Both legs use one codec, the caller's (`recorded_codec`): Opus from callgate's own clients, or
G.711 (PCMU, else PCMA) when the caller lists it first — a SIP phone or trunk, whose bridge
offers its G.711 codec first — or when the callee has a registered SIP phone (G.711 only) and
the caller offers G.711 too, as browsers and aiortc do. The callee's leg then offers only that
codec, so payloads still pass unchanged, and the recording says which codec it holds. Only a
caller without G.711 calling a user with a SIP phone gets two codecs (`recorded_codecs`): its
leg Opus, the callee's PCMU, transcoded by the anchor; each party is recorded in the codec it
sent, and the recording's codec names both (recording/codecs.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callgate.media.anchor import AnchorError, Bridge
from callgate.media.packets import CODEC_CLOCKS
from callgate.media.prompt_wav import PromptFileError
from callgate.media.srtp_path import LocalTurn
from callgate.recording.recorder import StreamRecorder
from callgate.recording.service import RecordingService
from callgate.recording.writer import RecordingFailure
from callgate.signaling import messages as m
from callgate.signaling.effects import Effect, Send
from callgate.signaling.reasons import Party, Reason
from callgate.signaling.ring_groups import PREFIX as GROUP_PREFIX
from callgate.signaling.sdp import filter_candidate, filter_sdp

if TYPE_CHECKING:
    from callgate.signaling.hub import SignalingHub

log = logging.getLogger(__name__)

PHONE_AGENT = "sip"  # the user agent of a registered SIP phone's device (runtime/sip_calls.py)
ANCHOR_USER_PREFIX = "@anchor-"  # "@" is not allowed in handles: no user can pose as the anchor
MAX_EARLY = 50  # candidates a caller may trickle before its anchor leg exists
IceServersFor = Callable[[str], Sequence[Mapping[str, Any]]]
DRAIN_QUIET = 0.06  # s without a new packet: what the parties sent before the end is recorded
DRAIN_LIMIT = 0.5  # s at most that closing a recording waits for it
_RTPMAP_PT = re.compile(r"^a=rtpmap:(\d+) +([A-Za-z0-9_.-]+)/(\d+)", re.MULTILINE)
STATIC_G711 = {"0": "pcmu", "8": "pcma", "9": "g722"}  # RFC 3551 §6
_AUDIO_FORMATS = re.compile(r"^m=audio +\d+ +[A-Z/]+((?: +\d+)*)", re.MULTILINE)


def recorded_codec(offer_sdp: str, g711: bool = False) -> str:
    """The codec a recorded call's caller leg uses, from the caller's offer: the first of Opus,
    PCMU and PCMA the offer lists (by rtpmap, or the static payload types 0 and 8 of RFC 3551
    §6), Opus when it lists none (the leg's answer then says what is missing): Opus from
    browsers, G.711 from a SIP phone's or carrier's bridge (which lists Opus after it, for a
    callee that has no G.711). `g711`: the callee has a SIP phone, which takes G.711 only:
    PCMU or PCMA before Opus when the caller offers them."""
    return recorded_codecs(offer_sdp, g711)[0]


def recorded_codecs(offer_sdp: str, g711: bool = False) -> tuple[str, str]:
    """(the caller leg's, the callee leg's) codec of a recorded call (`recorded_codec`). They
    differ only when the callee has a SIP phone and the caller offers no G.711 (Opus, or G.722
    alone, which a G.711-only phone cannot take): the callee's leg offers PCMU, and the anchor
    transcodes (media/transcode.py), so that each party's
    packets are recorded as it sent them."""
    rtpmaps = {
        number: name.lower()
        for number, name, clock in _RTPMAP_PT.findall(offer_sdp)
        if (name.lower(), int(clock)) in CODEC_CLOCKS.items()
    }
    listed = [
        rtpmaps.get(f) or STATIC_G711.get(f)
        for found in _AUDIO_FORMATS.findall(offer_sdp)
        for f in found.split()
    ]
    known = [codec for codec in listed if codec is not None]
    # what phones take: G.711 first (every phone has it), then G.722
    g711s = sorted({c for c in known if c != "opus"}, key=("pcmu", "pcma", "g722").index)
    if g711 and g711s:
        # a caller with G.722 alone: the phone may lack it, every phone has PCMU (transcoded)
        return g711s[0], g711s[0] if g711s[0] != "g722" else "pcmu"
    caller = known[0] if known else "opus"
    return caller, "pcmu" if g711 and caller == "opus" and known else caller


@dataclass(slots=True)
class _Anchored:
    call_id: str
    caller: str
    callee: str
    members: frozenset[str] = frozenset()  # a ring group's members rung (signaling/ringing.py)
    bridge: Bridge | None = None
    recorder: StreamRecorder | None = None
    early: list[dict[str, Any]] = field(default_factory=list)  # the caller's, before its leg
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


async def drain(recorder: StreamRecorder) -> None:
    """Packets a party sent just before the call ended may still be on their way (socket
    buffers, the relay; more of them on a busy server): keep recording until the legs have been
    quiet for DRAIN_QUIET, at most DRAIN_LIMIT, before the last chunk is written."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_LIMIT
    count = -1
    while recorder.failure is None and loop.time() < deadline:
        now = sum(recorder.packets.values())
        if now == count:
            return
        count = now
        await asyncio.sleep(DRAIN_QUIET)


async def play_prompt(
    bridge: Bridge, recordings: RecordingService, codec: str, other: str | None = None
) -> bool:
    """With `recording.prompt`, both parties of a recorded call hear that it is recorded: the
    beeps or `recording.prompt_file`, in the call's codec (Opus, or G.711 for SIP phones and
    carriers, media/prompt.py) — each leg's own when the call is transcoded (`other`: the
    other leg's codec); False when the prompt is off."""
    codecs = tuple(dict.fromkeys((codec, other or codec)))
    settings = recordings.settings
    if not settings.prompt:
        return False
    prompt_file = settings.prompt_file
    try:
        frames = await asyncio.to_thread(_prompt, prompt_file, codecs)
    except (OSError, PromptFileError) as exc:  # changed since the server started
        log.error("recording prompt file unusable, beeps played instead: %s", exc)
        frames = await asyncio.to_thread(_prompt, None, codecs)
    opus, g711 = frames
    await bridge.announce(opus, g711=g711)
    return True


def _prompt(
    path: Path | None, codecs: tuple[str, ...]
) -> tuple[tuple[bytes, ...], dict[str, tuple[bytes, ...]]]:
    """The prompt's Opus frames for legs in Opus, and its G.711 ones for legs in G.711."""
    # numpy: loaded at the first prompt, not by every `serve` start
    from callgate.media.prompt import G711_ENCODERS, prompt_frames, prompt_frames_g711

    g711 = {codec: prompt_frames_g711(path, codec) for codec in codecs if codec in G711_ENCODERS}
    return (prompt_frames(path) if "opus" in codecs else ()), g711


class Anchoring:
    def __init__(
        self,
        hub: SignalingHub,
        recordings: RecordingService,
        ice_servers: IceServersFor,
        setup_timeout: float,
        local_turn: LocalTurn | None = None,
    ) -> None:
        self.hub = hub
        self._local_turn = local_turn
        self.recordings = recordings
        self._ice_servers = ice_servers
        self._setup_timeout = setup_timeout
        self._calls: dict[str, _Anchored] = {}
        self._closing: set[asyncio.Task[None]] = set()  # recordings being closed after a call

    # -- TURN call-bound guard -------------------------------------------------------------------

    def serves(self, user_a: str, user_b: str) -> bool:
        """Is one of the two the anchor user of a live anchored call and the other its party?"""
        for anchor, other in ((user_a, user_b), (user_b, user_a)):
            if anchor.startswith(ANCHOR_USER_PREFIX):
                call_id = anchor.removeprefix(ANCHOR_USER_PREFIX)
                call = self._calls.get(call_id)
                if call is None:
                    return False
                if other in (call.caller, call.callee):
                    return True
                # a ring group's call: the members still rung, then the one who answered
                live = self.hub.engine.anchored_call(call_id)
                return live is not None and other in (live.callee_handle, *live.members)
        return False

    # -- the call's life -------------------------------------------------------------------------

    def begin(self, call_id: str, offer_sdp: str, rule: str | None) -> None:
        engine = self.hub.engine
        call = engine.anchoring_call(call_id)
        if call is None:
            return
        state = _Anchored(call_id, call.caller.handle, call.callee_handle, call.members)
        self._calls[call_id] = state
        self._spawn(state, self._begin(state, offer_sdp, rule))

    async def _begin(self, state: _Anchored, offer_sdp: str, rule: str | None) -> None:
        call_id, engine = state.call_id, self.hub.engine
        call = engine.anchoring_call(call_id)
        if call is None:
            return
        parties = {
            "caller": {"handle": call.caller.handle, "device": call.caller.device_id},
            "callee": {"handle": call.callee_handle},  # a group's: named at the answer
        }
        # a ring group's members: G.711 if any has a phone, so whoever answers takes it
        callees = state.members or {state.callee}
        phone = any(self._callee_has_phone(handle) for handle in callees)
        codec, callee_codec = recorded_codecs(offer_sdp, phone)
        try:
            state.recorder = await self.recordings.start(
                call_id,
                parties,
                rule,
                lambda reason: self._failed(call_id, reason),
                codec,
                callee_codec,
            )
            recording_id = state.recorder.recording_id
            anchor_user = ANCHOR_USER_PREFIX + call_id
            state.bridge = Bridge(
                lambda: self._ice_servers(anchor_user), state.recorder.on_packet, self._local_turn
            )
            caller_leg = state.bridge.leg("caller", codec)
            for candidate in state.early:  # trickled while the recording was being created
                await caller_leg.add_candidate(candidate)
            relays = engine.relay_addresses
            answer = await caller_leg.answer(filter_sdp(offer_sdp, True, relays))
            if engine.anchoring_call(call_id) is None:
                return  # the caller gave up meanwhile; ended() cleans up
            await self.hub.apply(
                [
                    Send(
                        call.caller.device_id,
                        m.recording_message(call_id, recording_id, rule, answer),
                    )
                ]
            )
            async with asyncio.timeout(self._setup_timeout):
                await caller_leg.connected.wait()
                await state.recorder.first_written()
            # a callee's device without the caller's G.711 may answer Opus: transcoded, and
            # each party recorded in its own codec (the recording's is set at the answer)
            also = ("opus",) if callee_codec != "opus" else ()
            offer = await state.bridge.leg("callee", callee_codec, also).offer()
        except (RecordingFailure, AnchorError, TimeoutError) as exc:
            why = (
                "no media from the caller reached the recorder"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            log.warning("call %s: recording unavailable: %s", call_id, why)
            await self._members_apply(
                call_id, lambda: engine.end_call(call_id, Reason.RECORDING_UNAVAILABLE, why[:255])
            )
            return
        notice = m.recording_message(call_id, recording_id, rule)
        await self._members_apply(
            call_id, lambda: engine.ring_anchored(call_id, answer, offer, notice)
        )

    async def _members_apply(self, call_id: str, step: Callable[[], list[Effect]]) -> None:
        """Take the engine's `step` and carry out its effects (`_members_step`)."""
        await self.hub.apply(self._members_step(call_id, step))

    def _members_step(self, call_id: str, step: Callable[[], list[Effect]]) -> list[Effect]:
        """The effects of the engine's `step`; a ring group's members it left out (not rung
        after all: busy or gone meanwhile, or the call ended) are withdrawn from the relays
        (hub_invites.py `members_left`) by a task of the hub's: the call's end cancels this
        call's own tasks (`_close`)."""
        rung = self.hub.engine.ringing_members(call_id)
        effects = step()
        if rung is not None:
            withdraw = self.hub.members_left(call_id, *rung)
            self.hub.keep(asyncio.get_running_loop().create_task(withdraw))
        return effects

    def _callee_has_phone(self, handle: str) -> bool:
        """Whether one of `handle`'s devices is a registered SIP phone (runtime/sip_calls.py),
        on this node or another (the sealed device directory says which are phones,
        runtime/redis_bus.py): the call is then recorded in G.711, which every device can
        take, so the phone rings wherever it registered."""
        devices = self.hub.devices.values()
        here = any(d.handle == handle and d.user_agent == PHONE_AGENT for d in devices)
        return here or self.hub.remote_phone(handle)

    def answered(self, call_id: str, answer_sdp: str) -> None:
        """The callee answered the anchor's offer."""
        state = self._calls.get(call_id)
        if state is None or state.bridge is None:
            return
        self._spawn(state, self._answered(state, answer_sdp))

    async def _answered(self, state: _Anchored, answer_sdp: str) -> None:
        assert state.bridge is not None
        leg = state.bridge.legs["callee"]
        if state.recorder is not None and state.members:
            try:  # a ring group's call: the member who answered, named before its leg connects
                await self._name_member(state, state.recorder.recording_id)
            except RecordingFailure as exc:
                self._failed(state.call_id, str(exc))
                return
        try:
            await leg.accept_answer(filter_sdp(answer_sdp, True, self.hub.engine.relay_addresses))
        except AnchorError as exc:
            await self.hub.apply(
                self.hub.engine.end_call(state.call_id, Reason.SETUP_FAILED, str(exc)[:255])
            )
            return
        caller_codec = state.bridge.legs["caller"].codec
        if state.recorder is not None:
            try:  # stored as the callee's media starts (exports read it)
                await self.recordings.set_codecs(
                    state.recorder.recording_id, caller_codec, leg.codec
                )
            except RecordingFailure as exc:
                self._failed(state.call_id, str(exc))
                return
        await leg.connected.wait()
        if state.recorder is not None:
            state.recorder.expect("callee")
        if await play_prompt(state.bridge, self.recordings, caller_codec, leg.codec):
            log.info("call %s: recording prompt played to both parties", state.call_id)

    async def _name_member(self, state: _Anchored, recording_id: str) -> None:
        """The recording's callee becomes the ring group's member who answered (and the
        device), as the call's record does (signaling/answering.py)."""
        call = self.hub.engine.anchored_call(state.call_id)
        if call is None or call.callee is None:
            return
        callee = {
            "handle": call.callee.handle,
            "device": call.callee.device_id,
            "ring_group": state.callee.removeprefix(GROUP_PREFIX),
        }
        await self.recordings.set_party(recording_id, "callee", callee)

    def candidate(self, call_id: str, party: Party, candidate: m.IceCandidate) -> None:
        """A candidate trickled by a party goes to its own anchor leg."""
        state = self._calls.get(call_id)
        relays = self.hub.engine.relay_addresses
        if state is None or not filter_candidate(candidate.candidate, True, relays):
            return
        leg = state.bridge.legs.get(party.value) if state.bridge is not None else None
        if leg is not None:
            self._spawn(state, leg.add_candidate(candidate.model_dump()))
        elif party is Party.CALLER and len(state.early) < MAX_EARLY:
            state.early.append(candidate.model_dump())

    def _failed(self, call_id: str, reason: str) -> None:
        """The recording failed (the recorder's callback): the call ends `recording-failed`; a
        ring group's members still held or ringing are withdrawn from the relays at once."""
        effects = self._members_step(
            call_id,
            lambda: self.hub.engine.end_call(call_id, Reason.RECORDING_FAILED, reason[:255]),
        )
        task = asyncio.get_running_loop().create_task(self.hub.apply(effects))
        self.hub.keep(task)

    def ended(self, call_id: str) -> None:
        """The call ended (any reason): close the recording and the anchor legs."""
        state = self._calls.pop(call_id, None)
        if state is not None:
            task = asyncio.get_running_loop().create_task(self._close(state))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, state: _Anchored) -> None:
        current = asyncio.current_task()
        for task in list(state.tasks):
            if task is not current:
                task.cancel()
        if state.recorder is not None:
            await drain(state.recorder)
            try:
                await self.recordings.finish(state.recorder.recording_id)
            except Exception:
                log.exception("closing recording %s failed", state.recorder.recording_id)
        if state.bridge is not None:
            await state.bridge.close()

    async def close(self) -> None:
        """Server stopping: close every recording (each gets its last chunk), including those
        of calls that just ended."""
        states = list(self._calls.values())
        self._calls.clear()
        closing = [self._close(s) for s in states] + list(self._closing)
        await asyncio.gather(*closing, return_exceptions=True)

    def _spawn(self, state: _Anchored, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        self.hub.keep(task)
