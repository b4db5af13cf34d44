"""Bonfiglio et al.'s naive Bayes voice classifier (detect/bayes.py): per-window beliefs on
message size and each gap from the voice codecs' framing, a per-window decision, a flow
decision on the windows' averages — and, in the detector, combined with the randomness test
(statistical fallback) or the chi-square framing test (classic Skype)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from callgate.detect.bayes import (
    GAP_THRESHOLD,
    WIN_THRESHOLD,
    WINDOW,
    Windows,
    decide,
    gap_belief,
    size_belief,
)
from callgate.detect.engine import Detector
from callgate.detect.verdict import CLASSIC_SKYPE
from tests.unit.detect import skype_packets as sp
from tests.unit.detect.detect_packets import udp_frame
from tests.unit.detect.test_detect_skype import detect

HOST, PEER = ("192.168.1.20", 50000), ("198.51.100.4", 61000)


def windows(sizes: list[int], gap_s: float, both: bool = True) -> Windows:
    w = Windows()
    for i, size in enumerate(sizes):
        for side in (0, 1) if both else (0,):
            w.add(side, size, 100.0 + i * gap_s + side * 0.003)
    return w


def test_codec_framing_is_likely_and_bulk_or_bursts_are_not() -> None:
    for gap in (20, 30, 40, 60):  # G.711/iLBC/SILK/Opus, iSAC/iLBC, Opus, iSAC/Opus 60 ms
        assert gap_belief(gap) > GAP_THRESHOLD and gap_belief(gap + 1.0) > GAP_THRESHOLD
    # a burst, a keep-alive, and games' ticks: 128, 64, 60, 30, 20 Hz, and 15/25/35 ms
    for gap in (1, 150, 7.8, 15.6, 16.7, 33.3, 50, 15, 25, 35):
        assert gap_belief(gap) < GAP_THRESHOLD
    for size in (20, 38, 50, 90, 120, 160):  # G.729, iLBC 20/30 ms, iSAC, SILK, G.711
        assert size_belief(size) > WIN_THRESHOLD
    assert size_belief(1200) < WIN_THRESHOLD and size_belief(500) < WIN_THRESHOLD


def test_a_voice_stream_is_voice_and_a_transfer_or_a_burst_is_not() -> None:
    rng = random.Random(5)
    voice = windows([rng.randint(60, 140) for _ in range(4 * WINDOW)], 0.03)
    evidence = decide(voice)
    assert evidence is not None and evidence.startswith("voice by naive Bayes")
    assert len(voice.closed) == 8 and all(min(s, g) >= WIN_THRESHOLD for s, g in voice.closed)
    assert decide(windows([1200] * 4 * WINDOW, 0.03)) is None  # file transfer sizes
    assert decide(windows([90] * 4 * WINDOW, 0.0005)) is None  # a burst, not a codec's pace
    assert decide(windows([90] * 4 * WINDOW, 0.2)) is None  # a keep-alive's pace
    assert decide(windows([90] * (WINDOW + 2), 0.03, both=False)) is None  # one window only


def test_the_flow_decision_needs_most_windows_and_both_averages() -> None:
    w = Windows()
    w.closed = [(-2.0, -1.5)] * 3 + [(-9.0, -1.5)]  # one bad window of four: 75 % voice
    assert decide(w) is None  # but its size belief drags the average under the threshold
    w.closed = [(-2.0, -1.5)] * 3 + [(-3.2, -1.5)]
    assert decide(w) is not None
    w.closed = [(-2.0, -1.5)] * 2 + [(-3.2, -1.5)] * 2  # half the windows: not voice
    assert decide(w) is None


def test_the_detector_needs_bayes_and_randomness_together() -> None:
    def flow(payload: object, gap: float) -> bool:
        detector = Detector()
        frames = []
        for i in range(300):  # 300 packets each way
            for side, (src, dst) in enumerate(((HOST, PEER), (PEER, HOST))):
                data = payload() if callable(payload) else payload
                frames.append((1000.0 + i * gap + side * 0.002, 1, udp_frame(src, dst, data)))
        detector.feed(frames)
        [result] = detector.report().flows
        return result.rtc and "statistical" in result.protocols

    assert flow(lambda: os.urandom(90), 0.02)  # ciphertext at a codec's pace and size: voice
    assert not flow(lambda: os.urandom(1100), 0.02)  # ciphertext in bulk: a transfer or a VPN
    # within the plain bounds used before (8-120 packets/s, 20-400 bytes), not a codec's framing
    assert not flow(lambda: os.urandom(90), 0.075)  # a message every 75 ms
    assert not flow(lambda: os.urandom(330), 0.02)  # 330-byte messages
    assert not flow(b"\x7f\x01\x02\x00" + bytes(86), 0.03)  # a game's pace, not ciphertext


HOST_GAME, SERVER_GAME = ("192.168.1.20", 50000), ("198.51.100.4", 27015)


def paced(rng: random.Random, period: float, jitter: float, seconds: float = 10.0) -> bool:
    """Whether the detector gives a statistical voice verdict to random payloads of 40-200
    bytes both ways every `period` seconds, each packet off its slot by up to ±`jitter`."""
    detector = Detector()
    frames = []
    for i in range(int(seconds / period)):
        for side, (src, dst) in enumerate(((HOST_GAME, SERVER_GAME), (SERVER_GAME, HOST_GAME))):
            ts = 1000.0 + i * period + side * 0.004 + rng.uniform(-jitter, jitter)
            frames.append((ts, 1, udp_frame(src, dst, rng.randbytes(rng.randint(40, 200)))))
    frames.sort(key=lambda frame: frame[0])
    detector.feed(frames)
    [result] = detector.report().flows
    return result.rtc and "statistical" in result.protocols


def test_games_tick_rates_are_not_voice_and_codec_pacing_with_jitter_is() -> None:
    """Random payloads at a game's size spread (40-200 bytes) — what the randomness and size
    tests both pass — are judged on their pace: a game server's tick rates (20, 30, 60, 64,
    128 Hz) and paces between a codec's frames get no verdict; 20, 30 and 60 ms codec frames with
    up to ±1.5 ms of jitter on every packet do."""
    rng = random.Random(11)
    for hz in (20, 30, 60, 64, 128):
        assert not paced(rng, 1.0 / hz, 0.0005), hz
    for ms in (15, 25, 35):
        assert not paced(rng, ms / 1000.0, 0.0005), ms
    for ms in (20, 30, 60):
        assert paced(rng, ms / 1000.0, 0.0015), ms


def test_skype_framing_without_a_codecs_pace_is_skype_but_not_voice(tmp_path: Path) -> None:
    """NBC ∧ CSC: the chi-square framing test says Skype, the classifier says whether it is
    voice; a file transfer over Skype's framing (1 000-byte messages every 5 ms) is not."""
    rng = random.Random(9)
    far = sp.peer(7)
    frames = [(10.0, udp_frame(sp.HOST, far, sp.skype_message(rng, 0x2, 40)))]
    for i in range(1, 800):
        for side, (src, dst) in enumerate(((sp.HOST, far), (far, sp.HOST))):
            message = sp.skype_message(rng, 0x2, 1000 if src is sp.HOST else 40)
            frames.append((10.0 + i * 0.005 + side * 0.001, udp_frame(src, dst, message)))
    [transfer] = detect(tmp_path, frames).flows
    assert transfer.rtc and transfer.app == CLASSIC_SKYPE and transfer.media == ()
    assert not any(e.startswith("voice by naive Bayes") for e in transfer.evidence)
    [call] = detect(tmp_path, sp.skype_call(random.Random(3), far)).flows
    assert call.app == CLASSIC_SKYPE and call.media == ("audio",)


def test_windows_are_made_at_a_flows_second_payload_and_miss_nothing() -> None:
    """One-packet opaque UDP flows (a scan) get no windows; from the second payload on they are
    the windows of every payload, the first included."""
    detector = Detector()
    peers = [(f"198.51.100.{i}", 40000 + i) for i in range(1, 51)]
    detector.feed((1000.0 + i * 0.001, 1, udp_frame(HOST, peer, os.urandom(90)))
                  for i, peer in enumerate(peers))  # fmt: skip
    assert len(detector.flows.flows) == 50
    assert all(flow.voice is None for flow in detector.flows.flows)
    rng = random.Random(4)
    frames, expected = [], Windows()
    for i in range(2 * WINDOW):
        for side, (src, dst) in enumerate(((HOST, PEER), (PEER, HOST))):
            ts, size = 2000.0 + i * 0.02 + side * 0.003, rng.randint(60, 140)
            frames.append((ts, 1, udp_frame(src, dst, os.urandom(size))))
            expected.add(side, size, ts)
    call = Detector()
    call.feed(frames)
    [flow] = call.flows.flows
    assert flow.voice is not None and flow.voice.closed == expected.closed
    assert len(expected.closed) == 4
