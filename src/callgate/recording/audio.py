"""A recording's packets as a stereo WAV: the caller left, the callee right, decoded on demand,
streamed: memory stays bounded whatever the call's length.

Each leg's packets are decoded with PyAV — libopus for Opus, FFmpeg's G.711 decoders
(`pcm_mulaw`, `pcm_alaw`) for a SIP call's PCMU/PCMA, whose 8 kHz samples are then resampled
to the WAV's 48 kHz — and placed on one timeline: a packet's sample position is its leg's first
arrival (relative to the first packet of the call) plus its RTP timestamp's distance from that
leg's first timestamp, in the codec's clock — unless a packet's timestamp and arrival time
disagree by more than 2 s (a new SSRC, a jump, a packet stamped in the past), where it is
placed at its arrival and the leg re-anchored on arrival time when that lasts
(recording/placement.py; counted in `Rendered.reanchors`). Gaps (silence, lost packets) stay
zero.

The packets are read twice, a chunk at a time: once up to each leg's first packet (the call's
origin), then to the end. A leg's packets wait in a small reorder buffer and are decoded in
timeline order; the timeline holds `WINDOW_SECONDS` of samples and hands what lies before them
to the output in order (a WAV file, whose header sizes are patched at the end, or the Ogg/Opus
encoder). A packet sent more than `REORDER_SECONDS` (arrival time) or `REORDER_PACKETS` before
those around it is decoded when it comes; one that would land before the held window is dropped
and counted per leg (`Rendered.dropped`; as every packet lies within 2 s of its arrival, with
these defaults only a G.711 or G.722 leg with more than REORDER_PACKETS waiting can lose any of
its own). Short of those, the samples are the ones the whole call held in memory would give.
"""

from __future__ import annotations

import heapq
import io
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from callgate.recording.chunks import LEGS, Packet
from callgate.recording.codecs import G722, OPUS, PCMA, PCMU, leg_codecs
from callgate.recording.placement import Placer
from callgate.recording.placement import rtp_distance as rtp_distance  # where it was

RATE = 48000
MAX_SECONDS = 6 * 3600  # a WAV's sizes are 32-bit: 6 h of 48 kHz 16-bit stereo is ~3.9 GiB
# each recording codec's decoder and sample rate
DECODERS = {
    OPUS: ("libopus", RATE),
    PCMU: ("pcm_mulaw", 8000),
    PCMA: ("pcm_alaw", 8000),
    G722: ("g722", 16000),
}
# samples a tick of the RTP clock: G.722's clock is 8 kHz for 16 kHz audio (RFC 3551 §4.5.2)
PER_TICK = {G722: 2}
WINDOW_SECONDS = 60.0  # of the call's timeline held at once (both channels: ~11 MiB)
REORDER_SECONDS = 5.0  # a packet waits this long (arrival time) for ones sent before it
REORDER_PACKETS = 1000  # and at most this many of its leg's packets wait with it
# Half the window must exceed REORDER_SECONDS and the G.711 hand-over margin (<= 0.1 s): the
# window moves on only that far behind the newest samples, and a leg's are at most that late.
Samples = npt.NDArray[np.int16]
Emit = Callable[[Samples], None]  # a block of (n, channels) samples, in timeline order
PacketSource = Callable[[], Iterable[Packet]]  # the recording's packets, read anew at each call


class AudioError(ValueError):
    """A recording whose codec this version cannot decode."""


@dataclass(frozen=True, slots=True)
class Rendered:
    frames: int  # stereo samples handed to the output
    dropped: dict[str, int] = field(default_factory=dict)  # per leg: pieces too late to place
    reanchors: dict[str, int] = field(default_factory=dict)  # per leg (recording/placement.py)

    @property
    def seconds(self) -> float:
        return self.frames / RATE


class _Timeline:
    """Samples at absolute positions, `channels` wide, of which `capacity` are held; what lies
    before them goes to `emit` in order (zeros where nothing was written). A write before the
    held span is dropped and counted (per channel)."""

    def __init__(self, channels: int, capacity: int, emit: Emit) -> None:
        self._held = np.zeros((capacity, channels), dtype=np.int16)
        self.capacity, self._emit = capacity, emit
        self.base = 0  # position of the first held sample: everything before it was emitted
        self.dropped = [0] * channels

    def put(self, pos: int, samples: Samples, channel: int = 0) -> None:
        half = self.capacity // 2
        if len(samples) > half:  # longer than a packet ever is: in parts
            for at in range(0, len(samples), half):
                self.put(pos + at, samples[at : at + half], channel)
            return
        if pos < self.base:
            self.dropped[channel] += 1
            return
        if pos + len(samples) > self.base + self.capacity:
            self.flush(pos + len(samples) - half)  # keep the latest half held
        at = pos - self.base
        self._held[at : at + len(samples), channel] = samples

    def flush(self, upto: int) -> None:
        """Emit everything before `upto`."""
        while self.base < upto:
            count = min(upto - self.base, self.capacity)
            self._emit(self._held[:count])  # consumed before the samples move
            self._held[: self.capacity - count] = self._held[count:]
            self._held[self.capacity - count :] = 0
            self.base += count


class _Mix:
    """The stereo timeline, cut at `MAX_SECONDS`: a piece starting before 0 or at the limit is
    dropped, one crossing it cut; the call ends where its last piece ends. Before the held
    window moves on, each leg is told (`hooks`) so it hands over what it still holds before."""

    def __init__(self, emit: Emit) -> None:
        self._timeline = _Timeline(2, 2 * round(WINDOW_SECONDS * RATE / 2), emit)
        self._limit = MAX_SECONDS * RATE
        self._advancing = False
        self.hooks: list[Callable[[int], None]] = []
        self.end = 0

    def put(self, pos: int, samples: Samples, channel: int) -> None:
        self.end = max(self.end, pos + len(samples))
        if not 0 <= pos < self._limit:
            return
        samples = samples[: self._limit - pos]
        piece = self._timeline.capacity // 8  # a leg's block, however long, in window-sized parts
        for at in range(0, len(samples), piece):
            self._place(pos + at, samples[at : at + piece], channel)

    def _place(self, pos: int, samples: Samples, channel: int) -> None:
        timeline = self._timeline
        if pos + len(samples) > timeline.base + timeline.capacity and not self._advancing:
            self._advancing = True
            try:
                for hook in self.hooks:
                    hook(pos + len(samples) - timeline.capacity // 2)
            finally:
                self._advancing = False
        timeline.put(pos, samples, channel)

    def finish(self) -> tuple[int, list[int]]:
        """The frames handed to the output, and the pieces dropped per channel."""
        frames = min(self.end, self._limit)
        self._timeline.flush(frames)
        return frames, self._timeline.dropped


class _Leg:
    """One leg: its packets placed (recording/placement.py), put back in timeline order in a
    reorder buffer, decoded."""

    def __init__(self, first: Packet, origin: float, clock: int, per_tick: int = 1) -> None:
        """`clock`: the leg's samples a second; `per_tick`: samples an RTP clock tick (the
        placer works in ticks)."""
        self._per_tick = per_tick
        self._placer = Placer(first, clock // per_tick)
        self._start = round((first.arrival - origin) * clock)
        self._waiting: list[tuple[int, int, Packet]] = []  # (position, number, packet)
        self._count = 0  # packets added: the next one's number

    @property
    def reanchors(self) -> int:
        return self._placer.reanchors

    def add(self, packet: Packet) -> None:
        position = self._start + self._placer.place(packet) * self._per_tick
        heapq.heappush(self._waiting, (position, self._count, packet))
        self._count += 1

    def release(self, now: float) -> None:
        """Decode the packets that waited long enough (arrival time `now`)."""
        waiting = self._waiting
        while waiting and (
            len(waiting) > REORDER_PACKETS or waiting[0][2].arrival <= now - REORDER_SECONDS
        ):
            position, _, packet = heapq.heappop(waiting)
            self._decode(position, packet)

    def finish(self) -> None:
        while self._waiting:
            position, _, packet = heapq.heappop(self._waiting)
            self._decode(position, packet)

    @property
    def dropped(self) -> int:
        """Pieces that came too late for the leg's own track (G.711)."""
        return 0

    def advance(self, position: int) -> None:
        """The timeline is about to move past 48 kHz `position`: hand over what lies before."""

    def _decode(self, position: int, packet: Packet) -> None:
        raise NotImplementedError


class _OpusLeg(_Leg):
    def __init__(self, first: Packet, origin: float, channel: int, mix: _Mix) -> None:
        super().__init__(first, origin, RATE)
        self._channel, self._mix = channel, mix
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = "stereo"
        self._codec.sample_rate = RATE

    def _decode(self, position: int, packet: Packet) -> None:
        if not packet.payload:  # an empty packet would end the decoder's stream (a flush)
            return
        for frame in self._codec.decode(av.Packet(packet.payload)):
            samples = frame.to_ndarray().reshape(-1, 2).mean(axis=1).astype(np.int16)
            self._mix.put(position, samples, self._channel)


class _G711Leg(_Leg):
    """The leg on its own 8 kHz timeline (from the call's origin), resampled to 48 kHz as one
    continuous stream, so the resampler's filter runs over continuous audio, not packet by
    packet. A packet sent before the call's first one (position < 0) is dropped."""

    def __init__(
        self,
        first: Packet,
        origin: float,
        channel: int,
        mix: _Mix,
        decoder: str,
        clock: int,
        end: int | None,
        per_tick: int = 1,
    ) -> None:
        super().__init__(first, origin, clock, per_tick)
        # where the track ends (when the survey could tell, in RTP ticks): the resampler is
        # flushed there
        last = None if end is None else self._start + end * per_tick
        self._last = last if last is not None and last < MAX_SECONDS * clock else None
        self._channel, self._mix, self._clock = channel, mix, clock
        # handed over past the window's position for the resampler's delay (16 input samples)
        self._margin = max(32, min(clock // 10, round(WINDOW_SECONDS * clock) // 8))
        self._batch = max(160, min(clock // 2, round(WINDOW_SECONDS * clock) // 16))
        codec = av.CodecContext.create(decoder, "r")
        if not isinstance(codec, AudioCodecContext):
            raise AudioError(f"{decoder} is not an audio decoder")
        codec.sample_rate = clock
        codec.layout = "mono"
        self._codec = codec
        self._track = _Timeline(1, 2 * clock, self._resample)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._end = 0  # of the 8 kHz track
        self._out = 0  # 48 kHz samples put into the mix so far
        self._fed = False
        self._done = False
        self._flushed = False  # the resampler's tail is out
        self._busy = False  # putting samples into the mix (which may call `advance` back)

    def _decode(self, position: int, packet: Packet) -> None:
        if self._done or position < 0 or not packet.payload:  # empty: it would end the stream
            return
        if position >= MAX_SECONDS * self._clock:
            self._done = True  # in timeline order: every later packet lies beyond too
            return
        for frame in self._codec.decode(av.Packet(packet.payload)):
            samples = frame.to_ndarray().reshape(-1).astype(np.int16)
            self._track.put(position, samples)
            self._end = max(self._end, position + len(samples))
        if position - self._track.base >= self._batch:  # resampled in batches, not per packet
            self._track.flush(position)  # in timeline order: nothing lands before it any more

    @property
    def dropped(self) -> int:
        return self._track.dropped[0]

    def advance(self, position: int) -> None:
        """What the track holds before `position` (and up to 100 ms more, for the resampler's
        delay) is final: resampled into the mix now. A leg silent for longer than the held window
        would otherwise keep its last packet (or a SIP leg on hold its last seconds) back. Past
        the leg's end the resampler is flushed there, as a decode of the whole track would."""
        if self._busy:  # its own samples are moving the timeline: it is handing them over
            return
        upto = position * self._clock // RATE + self._margin
        if self._last is not None and upto >= self._last:
            self._end_track(self._last)
        else:
            self._track.flush(upto)

    def _resample(self, block: Samples) -> None:
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._clock
        self._fed = True
        self._put(self._resampler.resample(frame))

    def _put(self, frames: Iterable[av.AudioFrame]) -> None:
        self._busy = True
        try:
            for frame in frames:
                samples = frame.to_ndarray().reshape(-1).astype(np.int16)
                self._mix.put(self._out, samples, self._channel)
                self._out += len(samples)
        finally:
            self._busy = False

    def finish(self) -> None:
        super().finish()
        self._end_track(self._end)

    def _end_track(self, end: int) -> None:
        if self._flushed:
            return
        self._track.flush(end)
        if self._fed:
            self._put(self._resampler.resample(None))
        self._flushed = True


@dataclass(slots=True)
class _Survey:
    firsts: dict[str, Packet]  # each leg's first packet
    ends: dict[str, int]  # G.711: where each leg's samples end, from its first packet's position


def _survey(packets: PacketSource, clocks: dict[str, int | None]) -> _Survey:
    """Each leg's first packet, read until both are found (the caller's is usually first), or
    with a leg's RTP `clocks` (G.711 and G.722: one byte a tick) the whole call, placed as the
    decode will place it, to learn where each leg ends."""
    whole = any(clock is not None for clock in clocks.values())
    survey = _Survey({}, {})
    placers: dict[str, Placer] = {}
    stream = iter(packets())
    try:
        for packet in stream:
            first = survey.firsts.setdefault(packet.leg, packet)
            clock = clocks.get(packet.leg)
            if clock is not None:
                placer = placers.get(packet.leg)
                if placer is None:
                    placer = placers[packet.leg] = Placer(first, clock)
                placer.place(packet)  # final: the decode places it there too
                if packet.payload or packet.leg in survey.ends:
                    survey.ends[packet.leg] = placer.byte_end
            elif not whole and len(survey.firsts) == len(LEGS):
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # a generator reading the file lets it go now
    return survey


def render(packets: PacketSource, codec: str, emit: Emit) -> Rendered:
    """Decode the call to (n, 2) int16 blocks at 48 kHz, caller left, callee right, handed to
    `emit` in order (each block is reused once `emit` returns). A transcoded call's recording
    names each party's codec (codecs.py): each leg is decoded with its own."""
    codecs = dict(zip(LEGS, leg_codecs(codec), strict=True))
    if any(each not in DECODERS for each in codecs.values()):
        raise AudioError(f"cannot decode a recording of codec {codec!r}")
    clocks: dict[str, int | None] = {
        leg: None if each == OPUS else DECODERS[each][1] // PER_TICK.get(each, 1)
        for leg, each in codecs.items()
    }
    survey = _survey(packets, clocks)
    firsts = survey.firsts
    origin = min((p.arrival for p in firsts.values()), default=0.0)
    mix = _Mix(emit)
    legs: dict[str, _Leg] = {}
    for channel, leg in enumerate(LEGS):
        decoder, clock = DECODERS[codecs[leg]]
        if leg in firsts:
            if codecs[leg] == OPUS:
                legs[leg] = _OpusLeg(firsts[leg], origin, channel, mix)
            else:
                end = survey.ends.get(leg)
                per_tick = PER_TICK.get(codecs[leg], 1)
                legs[leg] = _G711Leg(
                    firsts[leg], origin, channel, mix, decoder, clock, end, per_tick
                )
            mix.hooks.append(legs[leg].advance)
    for packet in packets():
        legs[packet.leg].add(packet)
        for each in legs.values():
            each.release(packet.arrival)
    for each in legs.values():
        each.finish()
    frames, late = mix.finish()
    dropped = {name: late[LEGS.index(name)] + leg.dropped for name, leg in legs.items()}
    return Rendered(frames, dropped, {name: leg.reanchors for name, leg in legs.items()})


def _source(packets: PacketSource | Sequence[Packet]) -> PacketSource:
    if callable(packets):
        return packets
    return lambda: iter(packets)


def write_wav(packets: PacketSource | Sequence[Packet], out: BinaryIO, codec: str) -> Rendered:
    """The WAV to `out` (seekable: its header's sizes are patched when the samples are in)."""
    with wave.open(out, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        return render(_source(packets), codec, lambda block: writer.writeframesraw(block.data))


def stereo_wav(packets: PacketSource | Sequence[Packet], path: Path, codec: str = OPUS) -> float:
    """Write the WAV to `path` (an existing file keeps its mode); its length in seconds."""
    with path.open("wb") as out:
        return write_wav(packets, out, codec).seconds


def stereo_wav_bytes(packets: Sequence[Packet], codec: str = OPUS) -> tuple[bytes, float]:
    """The WAV file's bytes and its length in seconds (short calls: tests, small tools)."""
    out = io.BytesIO()
    rendered = write_wav(packets, out, codec)
    return out.getvalue(), rendered.seconds
