"""Cheap softphone parties for the recording benchmark: aiortc for signaling, ICE and DTLS, then
pre-encoded Opus sent and received through `SrtpPath`, the anchor's own per-packet path.

A full aiortc party encodes and decodes Opus and runs a sender loop, a jitter buffer and a decoder
thread per call: on the benchmark's 2 shared cores a few dozen of them starve the server they are
meant to load. A lean party does per packet what the anchor does (one SRTP protect or unprotect,
one datagram), so the load generator costs about what the server's anchor costs.

- `install()` makes every `CallSession` the process creates send from a track that never yields
  (aiortc's sender stays idle) and registers the session.
- `LeanParties.run()` ticks every 5 ms: each session whose peer connection has come up gets an
  `SrtpPath`; every party sends its next 20 ms frame on its own phase (parties are spread over the
  four 5 ms slots so they do not all send in one burst). Frames are real Opus (libopus via PyAV):
  440 Hz for callers and 880 Hz for callees, with a little noise so every frame of a 5 s cycle is
  distinct.
- Each received packet is matched by payload to the time the other party sent it: one-way latency,
  party to party, on one clock (both parties are in this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack

import callgate.client.call as client_call
from callgate.media.packets import MediaPacket
from callgate.media.srtp_path import SrtpPath
from recording_figures import missing

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
CYCLE = 250  # distinct frames (5 s) per tone
TICK = 0.005
SLOTS = 4  # TICK * SLOTS = one frame


def opus_frames(freq: float, count: int = CYCLE, seed: int = 0) -> list[bytes]:
    """`count` consecutive 20 ms Opus frames of a tone with faint noise (all distinct)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    codec.time_base = Fraction(1, RATE)
    noise = np.random.default_rng(seed)
    out: list[bytes] = []
    for i in range(count + 10):
        t = (np.arange(FRAME) + i * FRAME) / RATE
        wave = 8000 * np.sin(2 * math.pi * freq * t) + noise.normal(0, 30, FRAME)
        samples = np.repeat(wave.astype(np.int16), 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        out += [bytes(p) for p in codec.encode(frame)]
    if len(set(out[:count])) < count:
        raise RuntimeError("opus frames are not distinct")
    return out[:count]


class IdleTrack(MediaStreamTrack):
    """An audio track that never yields: the party's aiortc sender sends nothing itself."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


@dataclass
class Party:
    session: Any
    slot: int
    path: SrtpPath | None = None
    done: bool = False
    first_sent: float = 0.0
    last_sent: float = 0.0
    index: int = 0
    received: int = 0
    unknown: int = 0  # received payloads that match nothing the other party sent
    seqs: list[int] = field(default_factory=list)  # received, in arrival order

    @property
    def lost(self) -> int:
        """Sequence numbers missing between the first and the last packet this party got."""
        return missing(self.seqs)


@dataclass
class LeanParties:
    frames: dict[str, list[bytes]]  # role -> frames
    parties: list[Party] = field(default_factory=list)
    sent_at: dict[tuple[str, bytes], float] = field(default_factory=dict)  # (call, payload)
    latencies: list[float] = field(default_factory=list)  # seconds, party to party

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """While inside: every new `CallSession` is one of these parties."""
        original_init = client_call.CallSession.__init__
        parties = self.parties

        def init(session: Any, *args: Any, **kwargs: Any) -> None:
            original_init(session, *args, **kwargs)
            session._source = IdleTrack()
            parties.append(Party(session, slot=random.randrange(SLOTS)))

        client_call.CallSession.__init__ = init  # type: ignore[method-assign]
        try:
            yield
        finally:
            client_call.CallSession.__init__ = original_init  # type: ignore[method-assign]

    def _attach(self, party: Party) -> None:
        session = party.session
        transceivers = session.pc.getTransceivers()
        if session.pc.connectionState != "connected" or not transceivers or not session.call_id:
            return
        party.path = SrtpPath.attach(
            session.role or "party", transceivers[0], self._receiver(party)
        )
        if party.path is None:
            raise RuntimeError("SrtpPath could not attach to a client leg")

    def _receiver(self, party: Party) -> Any:
        call_id = party.session.call_id
        sent_at, latencies = self.sent_at, self.latencies

        def received(packet: MediaPacket) -> None:
            party.received += 1
            party.seqs.append(packet.seq)
            sent = sent_at.get((call_id, packet.payload))
            if sent is None:
                party.unknown += 1
            else:
                latencies.append(packet.arrival - sent)

        return received

    def _send(self, party: Party) -> None:
        assert party.path is not None
        frames = self.frames[party.session.role]
        payload = frames[party.index % len(frames)]
        self.sent_at[(party.session.call_id, payload)] = time.time()
        party.path.send(payload, party.index * FRAME)
        party.index += 1
        party.last_sent = time.time()
        if not party.first_sent:
            party.first_sent = party.last_sent

    def talking(self) -> dict[str, tuple[float, float]]:
        """Per call, when both its parties were sending: from the later one's first frame to
        the earlier one's last (its hangup)."""
        sides: dict[str, list[Party]] = {}
        for party in self.parties:
            if party.session.call_id and party.first_sent:
                sides.setdefault(party.session.call_id, []).append(party)
        return {
            call_id: (max(p.first_sent for p in both), min(p.last_sent for p in both))
            for call_id, both in sides.items()
            if len(both) == 2
        }

    async def run(self) -> None:
        tick = 0
        next_at = time.monotonic()
        while True:
            slot = tick % SLOTS
            for party in self.parties:
                if party.done:
                    continue
                if party.session.pc.connectionState in ("closed", "failed"):
                    if party.path is not None:
                        party.path.detach()
                    party.done = True
                    continue
                if party.path is None:
                    self._attach(party)
                if party.path is not None and party.slot == slot:
                    self._send(party)
            tick += 1
            next_at += TICK
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def frames_by_role() -> dict[str, list[bytes]]:
    return {"caller": opus_frames(440.0, seed=1), "callee": opus_frames(880.0, seed=2)}
