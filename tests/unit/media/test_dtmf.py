"""RFC 4733 telephone-events from a SIP party turned into in-band G.711 tones (media/dtmf.py)."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest

from callgate.media.dtmf import DtmfToTones, parse_event
from callgate.media.packets import MediaPacket


def event(code: int, duration: int, end: bool = False, timestamp: int = 8000) -> MediaPacket:
    payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
    return MediaPacket("phone", payload, timestamp, 1, 7, 101, 0.0)


DECODERS = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000), "g722": ("g722", 16000)}


def decode(codec: str, payload: bytes) -> np.ndarray:
    name, rate = DECODERS[codec]
    decoder = av.CodecContext.create(name, "r")
    decoder.sample_rate, decoder.layout = rate, "mono"  # type: ignore[attr-defined]
    frames = decoder.decode(av.Packet(payload))  # type: ignore[attr-defined]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)


def peaks(samples: np.ndarray, rate: int = 8000) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    top = sorted(np.argsort(spectrum)[-40:], key=lambda i: -spectrum[i])
    found: list[float] = []
    for i in top:
        if all(abs(freqs[i] - f) > 60 for f in found):
            found.append(float(freqs[i]))
    return sorted(found[:2])


@pytest.mark.parametrize(("codec", "pt"), [("pcmu", 0), ("pcma", 8), ("g722", 9)])
def test_an_event_becomes_its_keys_tones_audio_passes(codec: str, pt: int) -> None:
    out: list[MediaPacket] = []
    dtmf = DtmfToTones(codec, 101, out.append)
    audio = MediaPacket("phone", b"\xff" * 160, 7840, 0, 7, pt, 0.0)
    dtmf.packet(audio)
    # "9" (852 + 1477 Hz): 0, 400, 800 samples, then the end three times (RFC 4733 §2.5.1.4)
    for duration, end in ((0, False), (400, False), (800, False), (960, True), (960, True)):
        dtmf.packet(event(9, duration, end))
    dtmf.packet(event(9, 960, True))
    assert out[0] is audio and list(dtmf.keys) == ["9"]
    tones = out[1:]
    # 20 ms steps of the 8 kHz RTP clock, G.722 too (its 320 samples: RFC 3551 §4.5.2)
    assert [p.timestamp - 8000 for p in tones] == [0, 160, 320, 480, 640, 800]
    assert {p.payload_type for p in tones} == {pt} and all(len(p.payload) == 160 for p in tones)
    samples = np.concatenate([decode(codec, p.payload) for p in tones])
    low, high = peaks(samples, DECODERS[codec][1])
    assert abs(low - 852) < 20 and abs(high - 1477) < 20
    # the next key is a new event (its own timestamp): "#", 941 + 1477 Hz
    dtmf.packet(event(11, 320, True, timestamp=16000))
    assert list(dtmf.keys) == ["9", "#"] and [p.timestamp for p in out[-2:]] == [16000, 16160]


def test_what_is_not_a_key_press_is_dropped() -> None:
    out: list[MediaPacket] = []
    dtmf = DtmfToTones("pcmu", 101, out.append)
    dtmf.packet(event(16, 800))  # flash: no tone for it
    dtmf.packet(MediaPacket("phone", b"\x01", 0, 1, 7, 101, 0.0))  # short payload
    assert out == [] and list(dtmf.keys) == []
    assert parse_event(b"\x05\x8a\x01\x40").duration == 320
    with pytest.raises(ValueError):
        parse_event(b"\x05")


def test_a_pressed_key_replaces_the_audio_for_its_duration() -> None:
    """A key from SIP INFO (no telephone-event negotiated): the next audio packets carry its
    tone on their own timeline, then audio passes again; a flood of presses is bounded."""
    from callgate.media.dtmf import MAX_PRESSED, NO_EVENTS

    out: list[MediaPacket] = []
    dtmf = DtmfToTones("pcma", NO_EVENTS, out.append)
    assert dtmf.press("5", 100) and not dtmf.press("E", 100)
    audio = [MediaPacket("phone", b"\xd5" * 160, 160 * n, n, 7, 8, 0.0) for n in range(7)]
    for packet in audio:
        dtmf.packet(packet)
    tones, after = out[:5], out[5:]  # 100 ms: five 20 ms frames
    assert [p.timestamp for p in out] == [p.timestamp for p in audio]
    assert after == audio[5:] and all(p.payload != audio[0].payload for p in tones)
    low, high = peaks(np.concatenate([decode("pcma", p.payload) for p in tones]))
    assert abs(low - 770) < 20 and abs(high - 1336) < 20  # "5" (ITU-T Q.23)
    assert list(dtmf.keys) == ["5"]
    assert all(dtmf.press("1", 40) for _ in range(MAX_PRESSED))
    assert not dtmf.press("1", 40)  # the queue is full


def test_the_kept_keys_are_bounded_for_a_long_call() -> None:
    """A call of many key presses keeps only the last KEPT_KEYS of them."""
    from callgate.media.dtmf import KEPT_KEYS

    dtmf = DtmfToTones("pcmu", 101, lambda packet: None)
    for n in range(KEPT_KEYS * 3):
        dtmf.packet(event(n % 10, 320, True, timestamp=8000 + 1000 * n))
    assert len(dtmf.keys) == KEPT_KEYS and dtmf.keys[-1] == str((KEPT_KEYS * 3 - 1) % 10)


def test_an_attached_phone_leg_hands_over_only_what_needs_work() -> None:
    """Attached to the phone's RtpLeg (as the SIP edge does), its audio goes straight to the
    bridge — nothing of ours runs on the phone's every packet — except while a pressed key
    plays; its telephone-events still become tones. No socket: datagrams handed to the leg."""
    from callgate.media.rtp_leg import RtpLeg, RtpPacket, build_rtp

    out: list[MediaPacket] = []
    dtmf = DtmfToTones("pcma", 101, out.append)
    leg = RtpLeg("phone", dtmf.packet, "pcma", events=101)
    dtmf.attach(leg)
    leg.set_remote(("127.0.0.1", 40000))

    def send(pt: int, n: int, payload: bytes) -> None:
        packet = RtpPacket(pt, False, n, 160 * n, 7, payload)
        leg.received_datagram(build_rtp(packet), ("127.0.0.1", 40000))

    assert leg.on_audio == out.append  # no call of ours in between
    send(8, 0, b"\xd5" * 160)
    assert [p.payload for p in out] == [b"\xd5" * 160]
    assert dtmf.press("5", 40)  # two 20 ms frames of tone instead of the next audio
    for n in (1, 2, 3):
        send(8, n, b"\xd5" * 160)
    assert [p.timestamp for p in out] == [0, 160, 320, 480]
    assert out[1].payload != b"\xd5" * 160 and out[2].payload != b"\xd5" * 160
    low, high = peaks(np.concatenate([decode("pcma", p.payload) for p in out[1:3]]))
    assert abs(low - 770) < 20 and abs(high - 1336) < 20  # "5"
    assert out[3].payload == b"\xd5" * 160 and leg.on_audio == out.append  # straight on again
    send(101, 4, struct.pack("!BBH", 9, 0x80 | 10, 320))  # "9", 40 ms, ended
    assert len(out) == 6 and all(p.payload_type == 8 for p in out[4:])
    assert list(dtmf.keys) == ["5", "9"]
