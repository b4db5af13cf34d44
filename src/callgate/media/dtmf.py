"""DTMF from a SIP party (RFC 4733 telephone-events) towards a leg that cannot carry them.

A phone or carrier that negotiated `telephone-event/8000` sends key presses as event packets
(RFC 4733 §2.3: event, end bit, volume, duration since the event's RTP timestamp) rather than as
tones in its audio. The WebRTC side of the bridge cannot carry them: aiortc, which ends every
WebRTC leg at the anchor, negotiates Opus, PCMU and PCMA only. So `DtmfToTones` turns each event
into the dual tone it stands for (ITU-T Q.23 frequencies), G.711-encoded in the call's codec
with FFmpeg's encoder (PyAV), in 20 ms frames on the event's own timeline; audio packets pass
unchanged. The browser, the CLI softphone and the recording then hear the key press in-band, as
on any G.711 call.

Retransmitted end packets (§2.5.1.4) and packets that add no duration produce nothing; an event
is cut at MAX_EVENT_SECONDS of tone. Events other than 0-9, *, #, A-D (flash, §3.2) are dropped.

Keys that arrive outside the media (SIP INFO, sip/dtmf_info.py) are `press`ed: the party's next
audio packets carry the key's tone instead of their audio for the key's duration, so the
stream keeps its own timeline and nothing is mixed. At most MAX_PRESSED keys wait their turn;
more are dropped (a phone flooding INFOs cannot queue minutes of tone).

On a phone's every packet: `attach` to its `RtpLeg` and the leg hands only its telephone-events
to us, and its audio only while a pressed key plays; the rest of its audio goes straight on, with
no call of ours in between (bench/srtp_stage.py, `--dtmf`, measures what that saves). `packet` is
the one handler for all of it, for a leg not attached.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from typing import Protocol

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from callgate.media.packets import MediaPacket, PacketHandler

CLOCK = 8000
FRAME = 160  # 20 ms at 8 kHz
MAX_EVENT_SECONDS = 5.0
EVENT = struct.Struct("!BBH")  # event, E|R|volume, duration (RFC 4733 §2.3)
# event code → (low, high) Hz (RFC 4733 §3.2 codes, ITU-T Q.23 frequencies)
KEYS = "0123456789*#ABCD"
_ROWS, _COLUMNS = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
_PLACE = {
    "1": (0, 0), "2": (0, 1), "3": (0, 2), "A": (0, 3),
    "4": (1, 0), "5": (1, 1), "6": (1, 2), "B": (1, 3),
    "7": (2, 0), "8": (2, 1), "9": (2, 2), "C": (2, 3),
    "*": (3, 0), "0": (3, 1), "#": (3, 2), "D": (3, 3),
}  # fmt: skip
FREQUENCIES = {
    code: (_ROWS[_PLACE[key][0]], _COLUMNS[_PLACE[key][1]]) for code, key in enumerate(KEYS)
}
AMPLITUDE = 6000  # each of the two tones, of 32767: about -15 dBm0, inside Q.24's range
ENCODERS = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722"}
# G.722's 20 ms frame is 320 samples at 16 kHz on the same 8 kHz RTP clock (RFC 3551 §4.5.2)
RATES = {"pcmu": CLOCK, "pcma": CLOCK, "g722": 16000}
PAYLOAD_TYPES = {"pcmu": 0, "pcma": 8, "g722": 9}
MAX_PRESSED = 16  # keys from `press` waiting to play
KEPT_KEYS = 64  # the last keys pressed, kept for logs and tests
NO_EVENTS = -1  # `events_pt` of a party that negotiated no telephone-event: keys come by INFO


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    code: int
    end: bool
    volume: int  # -dBm0
    duration: int  # samples since the event's timestamp


def parse_event(payload: bytes) -> Event:
    """One telephone-event payload (RFC 4733 §2.3); ValueError if it is not one."""
    if len(payload) < EVENT.size:
        raise ValueError("telephone-event payload too short")
    code, flags, duration = EVENT.unpack_from(payload)
    return Event(code, bool(flags & 0x80), flags & 0x3F, duration)


class Routed(Protocol):
    """A leg whose audio and telephone-events go to handlers of their own (`RtpLeg`)."""

    on_audio: PacketHandler
    on_event: PacketHandler


def key_of(code: int) -> str | None:
    return KEYS[code] if 0 <= code < len(KEYS) else None


class DtmfToTones:
    """Between a SIP party's `RtpLeg` and the rest: `packet` is the leg's handler."""

    def __init__(self, codec: str, events_pt: int, forward: PacketHandler) -> None:
        if codec not in ENCODERS:
            raise ValueError(f"no encoder for {codec!r}")
        self.events_pt = events_pt
        self._rate, self._payload_type = RATES[codec], PAYLOAD_TYPES[codec]
        self.convert = True  # False: events pass as they are (the other side takes them)
        # the last KEPT_KEYS keys pressed, in order (for logs and tests): not the whole call's
        self.keys: collections.deque[str] = collections.deque(maxlen=KEPT_KEYS)
        self._forward = forward
        self._encoder = _encoder(ENCODERS[codec], self._rate)
        self._current: int | None = None  # the RTP timestamp of the event being played
        self._covered = 0  # samples of it already sent as tone
        self._pressed: collections.deque[tuple[tuple[int, int], int]] = collections.deque()
        self._played = 0  # samples of the first pressed key already played
        self._leg: Routed | None = None

    def attach(self, leg: Routed) -> None:
        """Take from `leg` only what needs work (module doc)."""
        self._leg = leg
        leg.on_event = self.event
        self._route()

    def _route(self) -> None:
        """The attached leg's audio: through us while a pressed key plays, else straight on."""
        if self._leg is not None:
            self._leg.on_audio = self._replace_audio if self._pressed else self._forward

    def press(self, key: str, duration_ms: int) -> bool:
        """A key from outside the media (module doc); False when it is not one or too many
        wait."""
        if key not in KEYS or len(self._pressed) >= MAX_PRESSED:
            return False
        samples = min(duration_ms, int(MAX_EVENT_SECONDS * 1000)) * CLOCK // 1000
        self._pressed.append((FREQUENCIES[KEYS.index(key)], samples))
        self.keys.append(key)
        self._route()
        return True

    def packet(self, packet: MediaPacket) -> None:
        """Any packet of the party's (audio or telephone-event)."""
        if self._pressed and packet.payload_type in PAYLOAD_TYPES.values():
            self._replace_audio(packet)
        elif packet.payload_type == self.events_pt:
            self.event(packet)
        else:
            self._forward(packet)

    def _replace_audio(self, packet: MediaPacket) -> None:
        self._forward(packet._replace(payload=self._pressed_tone()))

    def event(self, packet: MediaPacket) -> None:
        """A telephone-event packet of the party's: its tone, or the event as it is."""
        if not self.convert:
            self._forward(packet)
            return
        try:
            event = parse_event(packet.payload)
        except ValueError:
            return
        tones = FREQUENCIES.get(event.code)
        if tones is None:
            return
        if packet.timestamp != self._current:  # a new event (§2.5.1.2: its own timestamp)
            self._current, self._covered = packet.timestamp, 0
            self.keys.append(KEYS[event.code])
        limit = min(event.duration, int(MAX_EVENT_SECONDS * CLOCK))
        while self._covered + FRAME <= limit or (event.end and self._covered < limit):
            start = self._covered
            self._covered += FRAME
            payload = self._tone(tones, start)
            self._forward(
                packet._replace(
                    payload=payload,
                    payload_type=self._payload_type,
                    timestamp=(packet.timestamp + start) % (1 << 32),
                )
            )

    def _pressed_tone(self) -> bytes:
        """The next 20 ms of the first pressed key, which is done once its duration is."""
        tones, samples = self._pressed[0]
        payload = self._tone(tones, self._played)
        self._played += FRAME
        if self._played >= samples:
            self._pressed.popleft()
            self._played = 0
            if not self._pressed:
                self._route()
        return payload

    def _tone(self, tones: tuple[int, int], start: int) -> bytes:
        """20 ms of the tones from RTP tick `start` (8 kHz), at the codec's sample rate."""
        per_tick = self._rate // CLOCK
        t = (np.arange(FRAME * per_tick) + start * per_tick) / self._rate
        wave = AMPLITUDE * (np.sin(2 * np.pi * tones[0] * t) + np.sin(2 * np.pi * tones[1] * t))
        frame = av.AudioFrame.from_ndarray(
            wave.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._rate
        return b"".join(bytes(p) for p in self._encoder.encode(frame))


def _encoder(name: str, rate: int) -> AudioCodecContext:
    encoder = av.CodecContext.create(name, "w")
    if not isinstance(encoder, AudioCodecContext):
        raise ValueError(f"{name} is not an audio encoder")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    return encoder
