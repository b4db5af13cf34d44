"""Recording calls dialled out to numbers (docs/sip.md, "Recorded calls to numbers").

A call to a number never reaches the signaling hub, so the recording anchor of calls between
users (signaling/anchoring.py) does not see it. The dial-out bridges (a phone's RTP↔RTP in
sip_dialout.py, a softphone's WebRTC↔RTP in sip_numbers.py) are the same `media.anchor.Bridge`,
so the recorder is their observer, as it is the anchor's: every packet either party sends is
recorded, then forwarded unchanged. The bridge's legs are called `caller` and `callee`, the
recorder's streams (caller left, callee right in exports). With `recording.prompt` both parties
hear the beeps (or `recording.prompt_file`) in G.711 when the carrier answers.

Fail closed, as for calls between users: the recording is created (file, row, audit entry)
after the CDR and before the carrier is called, and the carrier is called only once a chunk
holding the caller's first packets is fsynced; otherwise the call ends `recording-unavailable`.
A recorder failure mid-call (write, fsync, disk, a silent party) sets `failed`, and the call
ends `recording-failed`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from callgate.media.anchor import Bridge
from callgate.media.packets import MediaPacket
from callgate.recording.recorder import StreamRecorder
from callgate.recording.service import RecordingService
from callgate.recording.writer import RecordingFailure
from callgate.signaling.anchoring import drain, play_prompt

log = logging.getLogger(__name__)

UNAVAILABLE = "recording-unavailable"
FAILED = "recording-failed"


class NumberRecording:
    """The recording of one call to a number: `start`, `on_packet` as the bridge's observer,
    `caller_written` before the carrier is called, `close` at the end."""

    def __init__(self, recordings: RecordingService | None) -> None:
        self._recordings = recordings
        self.recorder: StreamRecorder | None = None
        self.failed = asyncio.Event()  # set with `failure` when the recording stops mid-call
        self.failure = ""
        self._prompt: asyncio.Future[bool] | None = None

    async def start(self, call_id: str, caller: str, device: str | None, number: str,
                    rule: str | None, codec: str, callee_codec: str | None = None,
                    ) -> None:  # fmt: skip
        """Create the recording; RecordingFailure when it cannot be (the call must not go on).
        `callee_codec`: the carrier's, when the bridge transcodes (each side is recorded as it
        sent)."""
        if self._recordings is None:
            raise RecordingFailure("this server has no recorder")
        parties: dict[str, dict[str, Any]] = {
            "caller": {"handle": caller, "device": device},
            "callee": {"number": number},
        }
        self.recorder = await self._recordings.start(
            call_id, parties, rule, self._failed, codec, callee_codec
        )

    def on_packet(self, packet: MediaPacket) -> None:
        if self.recorder is not None:
            self.recorder.on_packet(packet)

    async def caller_written(self, limit_s: float) -> None:
        """Returns once a chunk holding the caller's first packets is on disk; RecordingFailure
        when that does not happen within `limit_s` or the recording failed meanwhile."""
        assert self.recorder is not None
        written = asyncio.ensure_future(self.recorder.first_written())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait(
                {written, failed}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            written.cancel()
            failed.cancel()
        if self.failed.is_set():
            raise RecordingFailure(self.failure)
        if not written.done() or written.cancelled():
            raise RecordingFailure("no media from the caller reached the recorder")

    def answered(self, bridge: Bridge, codec: str, other: str | None = None) -> None:
        """The callee answered: from now on its silence fails the recording, and with
        `recording.prompt` both parties hear that the call is recorded (in `codec`, or each
        in its own: `other`, when the bridge transcodes)."""
        if self.recorder is None or self._recordings is None:
            return
        self.recorder.expect("callee")
        prompt = play_prompt(bridge, self._recordings, codec, other)
        self._prompt = asyncio.ensure_future(prompt)

    def _failed(self, reason: str) -> None:
        self.failure = reason
        self.failed.set()

    async def close(self) -> None:
        """What the parties sent just before the end is recorded, then the last chunk, the
        metadata and `recording.closed` (or `recording.failed`) in the audit log."""
        if self._prompt is not None:
            self._prompt.cancel()
        recorder, self.recorder = self.recorder, None
        if recorder is None or self._recordings is None:
            return
        await drain(recorder)
        try:
            await self._recordings.finish(recorder.recording_id)
        except Exception:
            log.exception("closing recording %s failed", recorder.recording_id)
