"""`CallSession`: one call's WebRTC side (aiortc) driven by signaling messages.

Caller:  `await session.invite("bob")` → offer (ICE gathered: aiortc does not trickle its own
         candidates) → `call.invite`; then feed it server events with `await session.handle(msg)`:
         `call.ringing`, `call.answered` (remote answer), `call.candidate`, `call.ended`.
Callee:  `await session.accept(incoming)` → remote offer, answer → `call.answer`.
Both:    when the peer connection is `connected` (ICE nominated and DTLS up) the session sends
         `call.media {state: connected, local/remote_candidate_type, codec}`; on failure
         `state: failed`. While connected it sends `call.stats` every `stats_interval` seconds,
         and a final one when the call ends. `hangup()` ends it from this side.

Progress is reported through `on_event(name, fields)`: calling, recording, ringing, answered,
connected, media-failed, reattached, ended. A recorded call (`call.recording`) takes the server
anchor's answer before ringing; the session reports media `connected` only once the call is answered. The session never raises from `handle()` for a message about another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from callgate.client.audio import WavSink, audio_source
from callgate.client.errors import SignalingError
from callgate.client.ice import (
    Codec,
    audio_streams,
    negotiated_codec,
    rtc_configuration,
    selected_candidate_types,
)
from callgate.client.signaling import SignalingChannel

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
STATS_INTERVAL = 2.0


def ignore_event(name: str, fields: dict[str, Any]) -> None:
    """The default `on_event`: report nothing."""


CLOSE_TIMEOUT = 3.0  # seconds to wait for aiortc's close (TURN deallocation)
# call.reattach: tried this long each time, this often, until the dead node's calls are taken
# over (its lease, 10 s by default, and twice that before they are given up)
REATTACH_TRY, REATTACH_PAUSE, REATTACH_WITHIN = 3.0, 0.5, 60.0


class CallSession:
    def __init__(
        self,
        signaling: SignalingChannel,
        hello: Mapping[str, Any],
        *,
        play: Path | None = None,
        tone: float | None = None,
        record: Path | None = None,
        stats_interval: float = STATS_INTERVAL,
        on_event: EventCallback = ignore_event,
        codec: str | None = None,
    ) -> None:
        """`codec`: offer and accept only this audio codec ("opus", "pcmu", "pcma"; default:
        all aiortc has), as a device that has only that one would."""
        self.signaling = signaling
        self.pc = RTCPeerConnection(rtc_configuration(hello))
        self.call_id: str | None = None
        self.role: str | None = None  # "caller" / "callee"
        self.media_state: str | None = None  # what we reported: "connected" / "failed"
        self.candidate_types: tuple[str, str] | None = None
        self.codec: Codec | None = None
        self.reason: str | None = None
        self.ended_by: str | None = None
        self.recorded = False  # the server said this call is recorded (`call.recording`)
        self.answered = asyncio.Event()
        self.connected = asyncio.Event()  # media reached
        self.media_failed = asyncio.Event()  # ICE/DTLS failed (before or after connecting)
        self.ended = asyncio.Event()
        self._source = audio_source(play, tone)
        self._only = codec
        self._sink = WavSink(record)
        self._stats_interval = stats_interval
        self._on_event = on_event
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats_task: asyncio.Task[None] | None = None
        self._final_sent = False
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # ---- the two ways a call starts ----

    async def invite(self, to: str) -> str:
        """Send the offer to `to`; returns the call_id from the ack (SignalingError if refused)."""
        self.role = "caller"
        self._add_source()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ack = await self.signaling.request("call.invite", to=to, sdp=self.pc.localDescription.sdp)
        call_id = ack.get("call_id")
        if not isinstance(call_id, str):
            raise SignalingError("bad-response", "call.invite ack without call_id")
        self.call_id = call_id
        self._emit("calling", to=to)
        return call_id

    async def accept(self, incoming: Mapping[str, Any]) -> None:
        """Answer a `call.incoming`: remote offer, local answer, `call.answer`."""
        self.role = "callee"
        self.call_id = str(incoming["call_id"])
        offer = RTCSessionDescription(sdp=str(incoming["sdp"]), type="offer")
        if self._only is not None:
            # before the offer is applied: aiortc negotiates the codecs there
            self._add_source()
        await self.pc.setRemoteDescription(offer)
        if self._only is None:
            self.pc.addTrack(self._source)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = self.pc.localDescription.sdp
        self.codec = negotiated_codec(answer)
        await self.signaling.request("call.answer", call_id=self.call_id, sdp=answer)
        self.answered.set()
        self._emit("answered")

    def _add_source(self) -> None:
        if self._only is None:
            self.pc.addTrack(self._source)
            return
        transceiver = self.pc.addTransceiver(self._source, direction="sendrecv")
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        mime = f"audio/{self._only}"
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == mime])

    # ---- server events ----

    async def handle(self, message: Mapping[str, Any]) -> None:
        """Apply one server event; events about other calls are ignored."""
        if self.call_id is None or message.get("call_id") != self.call_id:
            return
        kind = message.get("type")
        if kind == "call.ringing":
            self._emit("ringing", devices=message.get("devices"))
        elif kind == "call.recording":
            await self._recording(message)
        elif kind == "call.answered":
            answer = str(message["sdp"])
            self.codec = negotiated_codec(answer)
            self.answered.set()
            self._emit("answered")
            if not self.recorded:  # a recorded call's caller took the anchor's answer already
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        elif kind == "call.candidate":
            await self._add_candidate(message.get("candidate"))
        elif kind == "call.ended":
            await self._finish(str(message.get("reason", "")), message.get("ended_by"))

    async def _recording(self, message: Mapping[str, Any]) -> None:
        """The call is recorded. The caller's copy carries the server anchor's answer: media
        goes to the anchor now, before the callee rings (docs/signaling.md, `call.recording`)."""
        if self.recorded:
            return
        self.recorded = True
        self._emit("recording", recording_id=message.get("recording_id"))
        sdp = message.get("sdp")
        if self.role == "caller" and isinstance(sdp, str):
            self.codec = negotiated_codec(sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _add_candidate(self, candidate: Any) -> None:
        if not isinstance(candidate, Mapping) or not candidate.get("candidate"):
            return  # end-of-candidates or malformed: nothing to add
        text = str(candidate["candidate"]).removeprefix("candidate:")
        try:
            ice = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError):
            log.warning("ignoring malformed candidate %r", candidate)
            return
        ice.sdpMid = candidate.get("sdpMid")
        ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(ice)

    # ---- several nodes: the call outlives its node ----

    async def reattach(
        self, signaling: SignalingChannel, within: float = REATTACH_WITHIN
    ) -> dict[str, Any]:
        """The signaling connection was lost with its node (the media goes on): take the call
        back on `signaling`, a new connection to any node (docs/scaling.md). `call.reattach` is
        retried while the dead node's lease runs (`unavailable`, or no answer); SignalingError
        once `within` seconds have passed, or for any other refusal. Returns the ack."""
        if self.call_id is None:
            raise SignalingError("bad-request", "no call to re-attach")
        self.signaling = signaling  # stats, media reports and hang-up go here from now on
        deadline = time.monotonic() + within
        while True:
            try:
                ack = await signaling.request(
                    "call.reattach", call_id=self.call_id, timeout=REATTACH_TRY
                )
            except SignalingError as exc:
                if exc.code not in ("unavailable", "timeout") or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(REATTACH_PAUSE)
                continue
            self._emit("reattached", state=ack.get("state"))
            if ack.get("state") == "connected" and self.media_state == "connected":
                # our media report died with the old node: the new holder hears it now
                await self._resend_media()
            return ack

    # ---- ending ----

    async def hangup(self) -> None:
        """End the call from this side: final stats, `call.hangup`, close the peer connection."""
        if self.ended.is_set():
            return
        await self._send_final_stats()
        if self.call_id is not None:
            try:
                await self.signaling.request("call.hangup", call_id=self.call_id)
            except SignalingError as exc:
                log.info("call.hangup: %s", exc)
        # call.ended from the server normally follows; do not wait for it forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), 2.0)
        if not self.ended.is_set():
            await self._finish("hangup", self.role)

    async def reject(self, incoming: Mapping[str, Any], reason: str = "declined") -> None:
        await self.signaling.request("call.reject", call_id=str(incoming["call_id"]), reason=reason)
        await self.close()

    async def abort(self, reason: str) -> None:
        """End locally without the server (signaling lost, local timeout): no messages sent."""
        await self._finish(reason, None)

    async def _finish(self, reason: str, ended_by: Any) -> None:
        if self.ended.is_set():
            return
        self.reason = reason
        self.ended_by = None if ended_by is None else str(ended_by)
        await self._send_final_stats()
        self.ended.set()
        await self._sink.stop()  # the recording is complete once "ended" is reported
        self._emit("ended", reason=reason, ended_by=self.ended_by)
        await self.close()

    async def close(self) -> None:
        """Close the peer connection and the recording; idempotent, and safe to cancel.

        The work runs in one task of its own, shielded: a cancelled caller (e.g. the event pump
        being stopped) must not leave aiortc's close half done, or the next close() waits forever.
        """
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="call-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            # aiortc releases TURN allocations with a Refresh that it retransmits for ~40 s
            # when the relay is gone: a softphone must not hang on a dead server.
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("peer connection did not close within %.0f s; leaving it", CLOSE_TIMEOUT)
        await self._sink.stop()

    # ---- media state and stats ----

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            self._sink.start(track)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.media_state is None:
            self._spawn(self._report_media("connected"))
        elif state == "failed" and self.media_state != "failed":
            self._spawn(self._report_media("failed"))

    async def _report_media(self, state: str) -> None:
        if state == "connected" and not self.answered.is_set():
            # A recorded call's caller reaches the server's anchor before the callee answers:
            # the call has media only once it is answered.
            answered = asyncio.ensure_future(self.answered.wait())
            ended = asyncio.ensure_future(self.ended.wait())
            await asyncio.wait({answered, ended}, return_when=asyncio.FIRST_COMPLETED)
            answered.cancel()
            ended.cancel()
            if self.ended.is_set():
                return
        self.media_state = state
        fields: dict[str, Any] = {"call_id": self.call_id, "state": state}
        if state == "connected":
            self.candidate_types = selected_candidate_types(self.pc)
            local, remote = self.candidate_types or (None, None)
            fields.update(local_candidate_type=local, remote_candidate_type=remote)
            if self.codec is not None:
                fields["codec"] = self.codec.name
            self.connected.set()
            self._emit("connected", **{k: v for k, v in fields.items() if k != "call_id"})
            self._stats_task = asyncio.create_task(self._stats_loop(), name="call-stats")
        else:
            self.media_failed.set()
            self._emit("media-failed")
        try:
            await self.signaling.request("call.media", **fields)
        except SignalingError as exc:
            log.warning("call.media: %s", exc)

    async def _resend_media(self) -> None:
        local, remote = self.candidate_types or (None, None)
        fields: dict[str, Any] = {"call_id": self.call_id, "state": "connected"}
        fields.update(local_candidate_type=local, remote_candidate_type=remote)
        if self.codec is not None:
            fields["codec"] = self.codec.name
        try:
            await self.signaling.request("call.media", **fields)
        except SignalingError as exc:
            log.warning("call.media: %s", exc)

    async def stats(self) -> list[dict[str, Any]]:
        """The audio streams as `call.stats` reports them, from `pc.getStats()`."""
        report = await self.pc.getStats()
        return audio_streams(report, self.codec.clock_rate if self.codec else 48000)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self._stats_interval)
            streams = await self.stats()
            try:
                await self.signaling.request(
                    "call.stats", call_id=self.call_id, final=False, streams=streams
                )
            except SignalingError as exc:
                log.info("call.stats: %s", exc)

    async def _send_final_stats(self) -> None:
        """One final `call.stats` (best effort: the server may have closed the call already)."""
        if self._final_sent or self.media_state != "connected" or self.call_id is None:
            return
        self._final_sent = True
        if self._stats_task is not None:
            self._stats_task.cancel()
        try:
            streams = await self.stats()
            await self.signaling.request(
                "call.stats", call_id=self.call_id, final=True, streams=streams, timeout=3.0
            )
        except SignalingError as exc:
            log.info("final call.stats: %s", exc)

    # ---- helpers ----

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, name: str, **fields: Any) -> None:
        self._on_event(name, {"call_id": self.call_id, **fields})
