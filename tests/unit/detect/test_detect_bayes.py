"""Bonfiglio et al.'s naive Bayes voice classifier (detect/bayes.py): per-window beliefs on
message size and average gap from the voice codecs' framing, a per-window decision, a flow
decision on the windows' averages — and, in the detector, combined with the randomness test
(statistical fallback) or the chi-square framing test (classic Skype)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from callgate.detect.bayes import (
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
    for gap in (10, 20, 30, 60):  # G.729, G.711/iLBC/SILK/Opus, iSAC, iSAC 60 ms
        assert gap_belief(gap) > WIN_THRESHOLD
    assert gap_belief(1) < WIN_THRESHOLD and gap_belief(150) < WIN_THRESHOLD
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
