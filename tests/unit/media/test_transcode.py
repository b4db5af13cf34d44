"""Transcoding one direction of a bridge: what comes out is the same sound, in 20 ms frames of the
other codec, on the other codec's clock, with the party's gaps kept."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from callgate.media.packets import MediaPacket
from callgate.media.transcode import TranscodeError, Transcoder
from tests.integration.sip_client import dominant_hz, tone_ulaw, ulaw_decode


def packet(payload: bytes, timestamp: int, seq: int, pt: int = 0) -> MediaPacket:
    return MediaPacket("phone", payload, timestamp, seq, 0x1234, pt, 0.0)


def ulaw_tone_packets(hz: float, count: int, first: int = 4_294_960_000) -> list[MediaPacket]:
    """20 ms PCMU packets whose timestamps wrap past 2^32 on the way."""
    return [packet(tone_ulaw(hz, i * 160), (first + i * 160) % (1 << 32), i) for i in range(count)]


def test_g711_to_opus_and_back_keeps_the_tone_and_the_clock() -> None:
    to_opus, to_ulaw = Transcoder("pcmu", "opus"), Transcoder("opus", "pcmu")
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
    to_pcma = Transcoder("pcmu", "pcma")
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
    to_opus, to_g722 = Transcoder("pcmu", "opus"), Transcoder("opus", "g722")
    opus = [out for p in ulaw_tone_packets(880.0, 60) for out in to_opus.convert(p)]
    g722 = [out for p in opus for out in to_g722.convert(p)]
    assert {len(p.payload) for p in g722} == {160} and {p.payload_type for p in g722} == {9}
    assert {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(g722)} == {160}
    back = Transcoder("g722", "pcmu")
    ulaw = [out for p in g722 for out in back.convert(p)]
    assert {(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(ulaw)} == {160}
    decoded = np.concatenate([ulaw_decode(p.payload) for p in ulaw[10:]])
    assert abs(dominant_hz(decoded) - 880.0) < 10.0


def test_only_known_codec_pairs() -> None:
    with pytest.raises(TranscodeError):
        Transcoder("pcmu", "pcmu")
    with pytest.raises(TranscodeError):
        Transcoder("g729", "opus")
