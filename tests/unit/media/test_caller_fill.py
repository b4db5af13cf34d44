"""`SilenceUntilMedia`: G.711 silence from a SIP caller's side until its RTP flows, then the
party's packets on the same timeline, payloads unchanged."""

from __future__ import annotations

import asyncio
import itertools

import av
import numpy as np
import pytest

from callgate.media.caller_fill import SilenceUntilMedia, silence_frame
from callgate.media.packets import MediaPacket


def party(seq: int, timestamp: int, payload: bytes) -> MediaPacket:
    return MediaPacket("phone", payload, timestamp, seq, 0x1234, 8, 0.0)


async def test_silence_until_the_party_speaks_then_its_packets_continue_the_timeline() -> None:
    out: list[MediaPacket] = []
    fill = SilenceUntilMedia("phone", "pcma", out.append)
    fill.start()
    try:
        async with asyncio.timeout(10):
            while len(out) < 3:
                await asyncio.sleep(0.01)
        fill.packet(party(65535, 4294967200, b"A" * 160))  # wraps right after
        fill.packet(party(0, 64, b"B" * 160))
        await asyncio.sleep(0.1)  # no more silence once the party's media flows
    finally:
        await fill.stop()
    silence = [p for p in out if p.payload == b"\xd5" * 160]
    spoken = [p for p in out if p.payload[:1] in (b"A", b"B")]
    assert len(silence) == fill.filled >= 3 and len(out) == len(silence) + 2
    assert out[-2:] == spoken and not fill.filling
    stream = silence + spoken
    assert len({p.ssrc for p in stream}) == 1 and all(p.payload_type == 8 for p in stream)
    for before, after in itertools.pairwise(stream):
        assert (after.timestamp - before.timestamp) % (1 << 32) == 160
        assert (after.seq - before.seq) % (1 << 16) == 1


async def test_a_hold_right_after_the_first_packet_keeps_one_filler() -> None:
    """A hold before the filler woke to see the party's packet: that filler goes on, no second
    one beside it (two would send silence at twice the rate, stretching the recording)."""
    out: list[MediaPacket] = []
    fill = SilenceUntilMedia("phone", "pcmu", out.append)
    fill.start()
    try:
        async with asyncio.timeout(10):
            while len(out) < 2:
                await asyncio.sleep(0.01)
        fill.packet(party(7, 800, b"A" * 160))
        fill.hold(sends=False)  # no await in between: the filler has not woken since the packet
        fillers = [t for t in asyncio.all_tasks() if t.get_name() == "silence-phone"]
        assert len(fillers) == 1 and fill.filling
        async with asyncio.timeout(10):
            while out[-1].payload != b"\xff" * 160:  # silence again after the party's packet
                await asyncio.sleep(0.01)
    finally:
        await fill.stop()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "silence-phone"] == []


async def until(out: list[MediaPacket], n: int) -> None:
    async with asyncio.timeout(10):
        while len(out) < n:
            await asyncio.sleep(0.01)


def is_silence(packet: MediaPacket) -> bool:
    return packet.payload == b"\xff" * 160


async def test_a_hold_survives_the_packets_in_flight_until_it_resumes() -> None:
    """A phone holding the call `inactive` still sends until our 200 reaches it: those packets
    are dropped and the silence goes on (the recorder and the other party's watchdog keep
    hearing it) until a re-INVITE resumes; then its packets again, after the silence."""
    out: list[MediaPacket] = []
    fill = SilenceUntilMedia("phone", "pcmu", out.append)
    fill.start()
    try:
        await until(out, 1)
        fill.packet(party(1, 100, b"A" * 160))
        fill.hold(sends=False)
        fill.packet(party(2, 260, b"B" * 160))  # in flight before our 200 reached it
        fill.packet(party(3, 420, b"C" * 160))
        await until(out, len(out) + 5)  # the silence goes on after them
        assert fill.filling and not any(p.payload[:1] in (b"B", b"C") for p in out)
        fill.resume()
        await until(out, len(out) + 2)  # silence still, until its first packet
        fill.packet(party(9, 5000, b"D" * 160))
        await asyncio.sleep(0.1)
    finally:
        await fill.stop()
    assert not fill.filling and out[-1].payload[:1] == b"D"
    assert [p.payload[:1] for p in out if not is_silence(p)] == [b"A", b"D"]
    for before, after in itertools.pairwise(out):  # one timeline throughout
        assert (after.timestamp - before.timestamp) % (1 << 32) == 160
        assert (after.seq - before.seq) % (1 << 16) == 1


async def test_a_sendonly_hold_fills_only_when_no_music_on_hold_comes() -> None:
    """`sendonly` (RFC 3264 §8.4): music on hold passes, silence in its gaps (none at all is
    just a long gap), each run of its packets right after the silence on one timeline."""
    out: list[MediaPacket] = []
    fill = SilenceUntilMedia("phone", "pcmu", out.append)
    fill.hold(sends=True)  # a party we called: never started
    try:
        await until(out, 3)  # no music: silence
        for n in range(3):
            fill.packet(party(50 + n, 8000 + 160 * n, b"M" * 160))
        assert fill.filling
        await until(out, len(out) + 3)  # the music stopped: silence again
        fill.packet(party(90, 99999, b"N" * 160))
    finally:
        await fill.stop()
    kinds = [b"." if is_silence(p) else p.payload[:1] for p in out]
    first = kinds.index(b"M")
    assert first >= 3 and set(kinds[:first]) == {b"."} and kinds[first : first + 3] == [b"M"] * 3
    assert set(kinds[first + 3 : -1]) == {b"."} and kinds[-1] == b"N"
    for before, after in itertools.pairwise(out):
        assert (after.timestamp - before.timestamp) % (1 << 32) == 160
        assert (after.seq - before.seq) % (1 << 16) == 1


def test_only_g711_has_a_silence_to_send() -> None:
    with pytest.raises(ValueError, match="opus"):
        SilenceUntilMedia("phone", "opus", lambda packet: None)


def test_g722_silence_decodes_to_silence() -> None:
    """G.722 (ADPCM) has no zero code: its silence is what the encoder makes of zeros, 160
    bytes for 320 samples, and decodes to (nearly) nothing."""
    frame = silence_frame("g722")
    decoder = av.CodecContext.create("g722", "r")
    decoder.sample_rate, decoder.layout = 16000, "mono"  # type: ignore[attr-defined]
    pcm = np.concatenate(
        [f.to_ndarray().reshape(-1) for f in decoder.decode(av.Packet(frame * 5))]  # type: ignore[attr-defined]
    )
    assert len(frame) == 160 and len(pcm) == 1600 and np.abs(pcm[320:]).max() < 50
