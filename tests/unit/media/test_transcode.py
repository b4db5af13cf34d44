"""Transcoding one direction of a bridge: what comes out is the same sound, in 20 ms frames of the
other codec, on the other codec's clock, with the party's gaps kept."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from callgate.media.packets import MediaPacket
from callgate.media.transcode import TranscodeError, Transcoder
from tests.integration.sip_client import dominant_hz, tone_ulaw, ulaw_decode


def paced(step: float = 0.02) -> Callable[[], float]:
    """A clock that advances `step` seconds each time it is read: packets that arrive in real
    time (20 ms apiece) whatever the machine's load."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def packet(payload: bytes, timestamp: int, seq: int, pt: int = 0) -> MediaPacket:
    return MediaPacket("phone", payload, timestamp, seq, 0x1234, pt, 0.0)


def ulaw_tone_packets(hz: float, count: int, first: int = 4_294_960_000) -> list[MediaPacket]:
    """20 ms PCMU packets whose timestamps wrap past 2^32 on the way."""
    return [packet(tone_ulaw(hz, i * 160), (first + i * 160) % (1 << 32), i) for i in range(count)]


def test_g711_to_opus_and_back_keeps_the_tone_and_the_clock() -> None:
    to_opus, to_ulaw = Transcoder("pcmu", "opus", paced()), Transcoder("opus", "pcmu", paced())
    opus = [out for p in ulaw_tone_packets(880.0, 100) for out in to_opus.convert(p)]
    # one Opus packet per 20 ms frame (the encoder's look-ahead holds back only the last few)
    assert 90 <= len(opus) <= 100
    steps = {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(opus)}
    assert steps == {960}  # 20 ms at Opus's 48 kHz RTP clock (RFC 7587 §4.1)
    assert opus[0].payload_type == 111 and all(len(p.payload) < 160 for p in opus)
    ulaw = [out for p in opus for out in to_ulaw.convert(p)]
    assert {len(p.payload) for p in ulaw} == {160}
    assert {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(ulaw)} == {160}
    assert {p.payload_type for p in ulaw} == {0}
    decoded = np.concatenate([ulaw_decode(p.payload) for p in ulaw[10:]])
    assert abs(dominant_hz(decoded) - 880.0) < 10.0


def test_a_gap_the_party_left_stays_a_gap_and_late_packets_are_dropped() -> None:
    to_pcma = Transcoder("pcmu", "pcma", paced())
    sent = ulaw_tone_packets(440.0, 10, first=1000)
    resumed = [packet(p.payload, p.timestamp + 8000, p.seq + 10) for p in sent]  # 1 s later
    out = [o for p in [*sent, sent[3], *resumed] for o in to_pcma.convert(p)]
    assert to_pcma.stats.late == 1
    stamps = [o.timestamp for o in out]
    assert stamps[:10] == [i * 160 for i in range(10)]  # relative to the party's first packet
    assert stamps[10] >= 8000 and stamps[-1] == 8000 + 9 * 160
    assert {o.payload_type for o in out} == {8}


def test_g722_frames_are_320_samples_but_160_rtp_ticks() -> None:
    """G.722's RTP clock is 8 kHz for 16 kHz audio (RFC 3551 §4.5.2): from Opus, 20 ms frames of
    160 bytes whose timestamps step by 160; back to Opus, 960 (48 kHz); the tone survives."""
    to_opus, to_g722 = Transcoder("pcmu", "opus", paced()), Transcoder("opus", "g722", paced())
    opus = [out for p in ulaw_tone_packets(880.0, 60) for out in to_opus.convert(p)]
    g722 = [out for p in opus for out in to_g722.convert(p)]
    assert {len(p.payload) for p in g722} == {160} and {p.payload_type for p in g722} == {9}
    assert {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(g722)} == {160}
    back = Transcoder("g722", "pcmu", paced())
    ulaw = [out for p in g722 for out in back.convert(p)]
    assert {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(ulaw)} == {160}
    decoded = np.concatenate([ulaw_decode(p.payload) for p in ulaw[10:]])
    assert abs(dominant_hz(decoded) - 880.0) < 10.0


def test_only_known_codec_pairs() -> None:
    with pytest.raises(TranscodeError):
        Transcoder("pcmu", "pcmu", paced())
    with pytest.raises(TranscodeError):
        Transcoder("g729", "opus", paced())


def test_a_stream_restart_is_heard_not_silenced() -> None:
    """A new SSRC at a lower timestamp (a carrier's stream after a transfer), a jump back of
    10 s (a phone resuming), a forged packet 2^31 ahead: each restarts the direction, and the
    audio after it comes out right after what was sent; a duplicate at timestamp 0 is late."""
    to_pcma = Transcoder("pcmu", "pcma", paced())
    first = ulaw_tone_packets(440.0, 20, first=(1 << 32) - 1600)  # wraps to 0 at packet 10
    out = [o for p in [*first, first[10]] for o in to_pcma.convert(p)]
    assert first[10].timestamp == 0 and to_pcma.stats.late == 1  # 0 is a timestamp, not unset
    switched = [p._replace(ssrc=0x9999) for p in ulaw_tone_packets(440.0, 20, first=1000)]
    back = ulaw_tone_packets(440.0, 20, first=(switched[-1].timestamp - 80_000) % (1 << 32))
    forged = packet(tone_ulaw(440.0, 0), (back[-1].timestamp + (1 << 31)) % (1 << 32), 99)
    after = ulaw_tone_packets(440.0, 20, first=back[-1].timestamp + 160)
    for stream in (switched, back, [forged], after):
        out += [o for p in stream for o in to_pcma.convert(p)]
    assert to_pcma.stats.restarts == 4 and to_pcma.stats.late == 1
    assert len(out) >= 20 * 4  # every stream's audio came out (the forged packet's too)
    steps = [(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(out)]
    assert all(0 < step <= 2 * 160 for step in steps), steps  # on, never back, no big jump


def test_hostile_packets_cannot_multiply_the_work() -> None:
    """The reviewer's patterns: 500 PCMU packets of 2048 bytes whose timestamps step by 1 tick
    (6,400 Opus packets before); 120 ms Opus packets of 14 bytes at +1 tick (6 PCMU packets
    each); a real-time stream sent 20 times too fast; another payload type."""
    to_opus = Transcoder("pcmu", "opus", paced())
    big = [packet(bytes([0x55]) * 2048, 5000 + i, i) for i in range(500)]
    out = [o for p in big for o in to_opus.convert(p)]
    # 120 ms for the first packet, 1 tick each after: under 1,500 samples, 8 frames of 20 ms
    assert len(out) <= 8 and to_opus.stats.trimmed > 500 * 2000
    to_ulaw = Transcoder("opus", "pcmu", paced())
    # TOC: CELT fullband 20 ms, code 3 (RFC 6716 §3.1, §3.2.5): 6 frames of 2 bytes, 120 ms
    opus_120ms = bytes([0xFB, 0x06]) + bytes(range(1, 13))
    assert len(opus_120ms) == 14
    tiny = [packet(opus_120ms, 7000 + i, i, pt=111) for i in range(500)]
    out = [o for p in tiny for o in to_ulaw.convert(p, payload_type=111)]
    assert to_ulaw.stats.undecodable == 0
    assert len(out) <= 6 + 500 // 960 + 1, len(out)  # 120 ms, then 1/48 ms a packet
    # a real-time stream delivered all at once: 1 s of burst, then dropped undecoded
    to_pcma = Transcoder("pcmu", "pcma", lambda: 0.0)
    out = [o for p in ulaw_tone_packets(440.0, 1000) for o in to_pcma.convert(p)]
    assert len(out) <= 51 and to_pcma.stats.over_budget >= 940
    # another payload type than the negotiated one is not decoded
    other = Transcoder("pcmu", "pcma", paced())
    assert not [o for p in ulaw_tone_packets(440.0, 50) for o in other.convert(p, 8)]
    assert other.stats.wrong_type == 50
