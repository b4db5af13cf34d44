"""`SilenceUntilMedia`: G.711 silence from a SIP party until its own RTP flows (docs/sip.md,
"Recorded calls").

A phone or carrier that calls sends RTP only once it has our 200 OK, but a call that must be
recorded rings nobody until the recorder holds the caller's first packets on disk
(signaling/anchoring.py): without them the call would end `recording-unavailable` every time.
So, from the moment the bridge exists, the caller's side sends the anchor one packet of digital
silence every 20 ms (PCMU 0xFF, PCMA 0xD5: RFC 3551 §4.5.14, ITU-T G.711 code for zero) on its
own RTP timeline, and stops at the party's first packet. From then on the party's packets pass
with their payload unchanged; only their timestamps are moved onto the same timeline (and
sequence numbers continued), so the recording places the party's audio right after the silence.

What the recording then holds for the caller before the answer is silence, which is what the
callee would have heard. Nothing is filled in after the party's first packet (a phone that goes
quiet, e.g. silence suppression, is heard as silent by the recorder's silence limit, fail-closed)
except while the party holds the call (RFC 3264 §8.4), an explicit state its re-INVITE sets
(runtime/sip_reoffers.py) and only a re-INVITE that resumes sending ends:

- `hold(sends=False)` (its direction `inactive`/`recvonly`): silence throughout, and the packets
  it still sends are dropped (those in flight before our 200 reaches it: RFC 3264 §8.4 lets it
  stop only then);
- `hold(sends=True)` (`sendonly`: music on hold, perhaps none): silence whenever it sends
  nothing, its packets when it does, each run of them placed right after the silence;
- `resume()`: silence until its next packet, which starts its timeline afresh, as at the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from callgate.media.packets import CODEC_CLOCKS, MediaPacket, PacketHandler

FRAME_SECONDS = 0.02
SILENCE = {"pcmu": b"\xff", "pcma": b"\xd5"}
PAYLOAD_TYPES = {"pcmu": 0, "pcma": 8, "g722": 9}


@functools.cache
def silence_frame(codec: str) -> bytes:
    """20 ms of digital silence in `codec`: G.711's zero code repeated; for G.722 (ADPCM, no
    such code) what FFmpeg's encoder makes of 320 zero samples (16 kHz, RFC 3551 §4.5.2)."""
    if codec in SILENCE:
        return SILENCE[codec] * round(CODEC_CLOCKS[codec] * FRAME_SECONDS)
    if codec != "g722":
        raise ValueError(f"no silence for codec {codec!r}")
    encoder = av.CodecContext.create("g722", "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate, encoder.layout, encoder.format = 16000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 640), np.int16), format="s16", layout="mono")
    frame.sample_rate = 16000
    data = b"".join(bytes(p) for p in encoder.encode(frame))
    return data[-160:]  # the second frame: the encoder's state settled on silence


class SilenceUntilMedia:
    """Sits between a SIP party's `RtpLeg` and the bridge: `packet` is the leg's handler."""

    def __init__(self, leg: str, codec: str, forward: PacketHandler) -> None:
        if codec not in PAYLOAD_TYPES:
            raise ValueError(f"no silence for codec {codec!r}")
        self.leg = leg
        self.filled = 0  # silence packets sent
        self._forward = forward
        self._clock = CODEC_CLOCKS[codec]
        self._frame = round(self._clock * FRAME_SECONDS)
        self._silence = silence_frame(codec)
        self._payload_type = PAYLOAD_TYPES[codec]
        self._ssrc = secrets.randbits(32)
        self._timestamp = secrets.randbits(32)  # the next packet's, on our timeline
        self._seq = secrets.randbits(16)
        self._offset: int | None = None  # ours - the party's timestamps, from its first packet
        self._seq_offset = 0
        self._task: asyncio.Task[None] | None = None
        self._held: bool | None = None  # None: not held; else whether the party still sends
        self._heard = -1.0  # loop time of the party's last packet (while held, sending)
        self.held_since: float | None = None  # loop time the hold began, while held

    @property
    def filling(self) -> bool:
        return self._offset is None or self._held is not None

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return  # still filling, or not yet woken to see the party's packet: it goes on
        self._task = asyncio.create_task(self._fill(), name=f"silence-{self.leg}")

    def hold(self, sends: bool) -> None:
        """The party holds the call (module doc; RFC 3264 §8.4): `sends` whether it may still
        send (music on hold). Silence from now on (for a fill never `start`ed, a party we
        called, for the first time) until `resume`."""
        if self._held is None:
            self.held_since = asyncio.get_running_loop().time()
        self._held = sends
        self.start()

    def resume(self) -> None:
        """The party sends again: silence until its next packet (module doc)."""
        if self._held is None:
            return
        self._held, self.held_since = None, None
        self._offset = None
        self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.filling:
            if not (self._held and loop.time() - self._heard < 3 * FRAME_SECONDS):
                self._send_silence()  # (while it sends music on hold, its packets go instead)
            due += FRAME_SECONDS
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _send_silence(self) -> None:
        packet = MediaPacket(
            leg=self.leg,
            payload=self._silence,
            timestamp=self._timestamp,
            seq=self._seq,
            ssrc=self._ssrc,
            payload_type=self._payload_type,
            arrival=time.time(),
        )
        self._timestamp = (self._timestamp + self._frame) % (1 << 32)
        self._seq = (self._seq + 1) % (1 << 16)
        self.filled += 1
        if self._held:
            self._offset = None  # its next packet goes right after this silence
        self._forward(packet)

    def packet(self, packet: MediaPacket) -> None:
        """The party's packet: onto our timeline, then to the bridge (dropped while it holds
        the call saying it sends nothing)."""
        if self._held is False:
            return
        if self._held:
            self._heard = asyncio.get_running_loop().time()
        if self._offset is None:
            self._offset = (self._timestamp - packet.timestamp) % (1 << 32)
            self._seq_offset = (self._seq - packet.seq) % (1 << 16)
        timestamp = (packet.timestamp + self._offset) % (1 << 32)
        seq = (packet.seq + self._seq_offset) % (1 << 16)
        # silence that follows (a hold) continues our timeline after this packet
        self._timestamp = (timestamp + self._frame) % (1 << 32)
        self._seq = (seq + 1) % (1 << 16)
        self._forward(packet._replace(timestamp=timestamp, seq=seq, ssrc=self._ssrc))
