"""A recording's packets decoded to the stereo WAV: Opus (callgate's clients) and G.711 (SIP
phones and trunks, PCMU and PCMA), each leg on one 48 kHz timeline.

Each packet is placed by its RTP timestamp: a packet reordered on the way (it
reached the anchor after the leg's first packet but was sent before it) lies just before that
first packet, not 2^32 samples after it (which made a 6-hour WAV of a 2-second call)."""

from __future__ import annotations

import io
import random
import wave

import av
import numpy as np
import numpy.typing as npt
import pytest

from callgate.recording import audio
from callgate.recording.audio import RATE, AudioError, rtp_distance, stereo_wav_bytes
from callgate.recording.chunks import Packet
from callgate.recording.codecs import G722, OPUS, PCMA, PCMU, leg_codecs, recording_codec

ENCODERS = {PCMU: "pcm_mulaw", PCMA: "pcm_alaw"}


def g711(codec: str, hz: float, first: int, count: int = 160) -> bytes:
    """`count` samples of a tone at 8 kHz, encoded with FFmpeg's G.711 encoder."""
    t = (np.arange(count) + first) / 8000
    samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
    encoder = av.CodecContext.create(ENCODERS[codec], "w")
    encoder.sample_rate, encoder.layout, encoder.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in encoder.encode(frame))


def peak_hz(samples: npt.NDArray[np.float64]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[int(np.argmax(spectrum))])


def read(data: bytes) -> npt.NDArray[np.float64]:
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getframerate()) == (2, RATE)
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    return frames.reshape(-1, 2).astype(np.float64)


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_g711_legs_decode_onto_one_timeline(codec: str) -> None:
    # the caller from t=0 for 2 s; the callee joins 0.5 s later; its packets come out of order
    # and one is lost (a 20 ms gap), with an RTP timestamp base near the wrap
    caller = [Packet("caller", n, 1000 + n * 160, 100.0 + n * 0.02, g711(codec, 440, n * 160))
              for n in range(100)]  # fmt: skip
    base = (1 << 32) - 800
    callee = [Packet("callee", n, (base + n * 160) % (1 << 32), 100.5 + n * 0.02,
                     g711(codec, 880, n * 160)) for n in range(75) if n != 40]  # fmt: skip
    callee[10], callee[11] = callee[11], callee[10]
    data, seconds = stereo_wav_bytes(caller + callee, codec)
    audio = read(data)
    assert seconds == pytest.approx(2.0, abs=0.01)
    half = RATE // 2
    assert np.abs(audio[: half - 480, 1]).max() == 0  # the callee had not joined yet
    assert abs(peak_hz(audio[:half, 0]) - 440) < 5
    assert abs(peak_hz(audio[half : 2 * half, 1]) - 880) < 5
    lost = half + 40 * 960  # the lost packet's 20 ms stay silent (resampler edges aside)
    assert np.abs(audio[lost + 100 : lost + 860, 1]).max() == 0
    assert np.abs(audio[lost - 960 : lost - 100, 1]).max() > 1000


def test_an_unknown_codec_is_refused_not_guessed() -> None:
    packet = Packet("caller", 0, 0, 1.0, b"\x00" * 160)
    with pytest.raises(AudioError, match="g729"):
        stereo_wav_bytes([packet], "g729/8000/1")


FRAME = 960


def opus_tone(hz: float, frames: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = RATE, "mono", "s16", 32000
    payloads: list[bytes] = []
    for i in range(frames + 2):  # the encoder lags a little
        t = (np.arange(FRAME) + i * FRAME) / RATE
        samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i * FRAME
        payloads += [bytes(p) for p in codec.encode(frame)]
    return payloads[:frames]


def test_a_transcoded_calls_legs_decode_each_with_its_own_codec() -> None:
    """A transcoded call records each party as it sent: the caller's Opus, the callee's PCMU
    (codecs.py: "opus/48000/2+pcmu/8000/1"); each channel holds its party's tone."""
    codec = recording_codec("opus", "pcmu")
    assert codec == f"{OPUS}+{PCMU}" and leg_codecs(codec) == (OPUS, PCMU)
    assert recording_codec("pcma", "pcma") == PCMA and leg_codecs(PCMA) == (PCMA, PCMA)
    caller = [Packet("caller", n, 5000 + n * FRAME, 100.0 + n * 0.02, payload)
              for n, payload in enumerate(opus_tone(440.0, 100))]  # fmt: skip
    callee = [Packet("callee", n, 77 + n * 160, 100.01 + n * 0.02, g711(PCMU, 880, n * 160))
              for n in range(100)]  # fmt: skip
    data, seconds = stereo_wav_bytes(sorted(caller + callee, key=lambda p: p.arrival), codec)
    assert seconds == pytest.approx(2.0, abs=0.05)
    audio = read(data)
    assert abs(peak_hz(audio[4800:90000, 0]) - 440) < 5
    assert abs(peak_hz(audio[4800:90000, 1]) - 880) < 5
    with pytest.raises(AudioError):
        stereo_wav_bytes(caller, f"{OPUS}+g729/8000/1")


def g722(hz: float, first: int) -> bytes:
    """20 ms of a tone (320 samples at 16 kHz) as G.722, sample `first` onwards."""
    t = (np.arange(320) + first) / 16000
    samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
    encoder = av.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 16000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 16000
    return b"".join(bytes(p) for p in encoder.encode(frame))


def test_g722_is_decoded_at_16_khz_on_its_8_khz_rtp_clock() -> None:
    """RFC 3551 §4.5.2: a 20 ms G.722 frame is 320 samples but 160 RTP ticks. A recording of 2 s
    of each party is 2 s long, its tones where they were (a clock taken for the sample rate
    would halve the length and double the pitch)."""
    caller = [Packet("caller", n, 1000 + n * 160, 100.0 + n * 0.02, g722(440, n * 320))
              for n in range(100)]  # fmt: skip
    callee = [Packet("callee", n, 9 + n * 160, 100.01 + n * 0.02, g722(1000, n * 320))
              for n in range(100)]  # fmt: skip
    data, seconds = stereo_wav_bytes(sorted(caller + callee, key=lambda p: p.arrival), G722)
    assert seconds == pytest.approx(2.0, abs=0.05)
    audio = read(data)
    assert abs(peak_hz(audio[4800:90000, 0]) - 440) < 5
    assert abs(peak_hz(audio[4800:90000, 1]) - 1000) < 5


def test_rtp_distance_is_signed_and_wraps() -> None:
    assert rtp_distance(1960, 1000) == 960
    assert rtp_distance(1000, 1960) == -960
    assert rtp_distance(100, 0xFFFFFF00) == 356  # across the wrap
    assert rtp_distance(0xFFFFFF00, 100) == -356


def test_a_packet_reordered_before_the_first_one_stays_in_place() -> None:
    payloads = opus_tone(440.0, 100)
    base = 0xFFFFFFFF - 10 * FRAME  # the leg's timestamps also wrap during the call
    sent = [
        Packet("caller", seq, (base + seq * FRAME) & 0xFFFFFFFF, 100.0 + seq * 0.02, payload)
        for seq, payload in enumerate(payloads)
    ]
    arrived = [sent[1], sent[0], *sent[2:]]  # packet 0 overtaken by packet 1
    data, seconds = stereo_wav_bytes(arrived)
    assert 1.9 < seconds < 2.1, seconds
    with wave.open(io.BytesIO(data)) as wav:
        left = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)[0::2]
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    peak = np.fft.rfftfreq(len(left), 1 / RATE)[int(np.argmax(spectrum[1:])) + 1]
    assert abs(peak - 440.0) < 5.0


def long_call(codec: str, seconds: int) -> list[Packet]:
    """The caller's 440 Hz from 0 s, on hold (no packets at all) from 10 s to 16 s; the callee's
    880 Hz from 0.3 s to 3 s before the end. In arrival order, a few packets overtaken."""
    opus = codec not in ENCODERS
    step = FRAME if opus else 160
    tones = {
        leg: opus_tone(hz, 50) if opus else [g711(codec, hz, n * 160) for n in range(50)]
        for leg, hz in (("caller", 440.0), ("callee", 880.0))
    }  # one second of each, sent over and over
    packets = []
    for n in range(seconds * 50):
        if not 500 <= n < 800:
            packets.append(Packet("caller", n, 1000 + n * step, 50.0 + n * 0.02,
                                  tones["caller"][n % 50]))  # fmt: skip
        if 15 <= n < (seconds - 3) * 50:
            packets.append(Packet("callee", n, (0xFFFFF000 + n * step) % (1 << 32),
                                  50.001 + n * 0.02, tones["callee"][n % 50]))  # fmt: skip
    for at in range(101, len(packets) - 2, 97):
        packets[at], packets[at + 2] = packets[at + 2], packets[at]
    return packets


@pytest.mark.parametrize("codec", [OPUS, PCMU])
def test_a_long_call_streams_through_a_small_window_to_the_same_wav(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In service 60 s of the timeline are held; here 0.5 s, so this 40 s call passes through
    # the window 160 times, across a 6 s hold and a leg that ends early: the WAV is the one
    # decoded with the whole call in the window, its header's sizes patched right.
    packets = long_call(codec, 40)
    whole, seconds = stereo_wav_bytes(packets, codec)
    monkeypatch.setattr(audio, "WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(audio, "REORDER_SECONDS", 0.1)
    monkeypatch.setattr(audio, "REORDER_PACKETS", 5)
    streamed, again = stereo_wav_bytes(packets, codec)
    assert streamed == whole and again == seconds == pytest.approx(40.0, abs=0.01)
    with wave.open(io.BytesIO(streamed)) as wav:
        assert wav.getnframes() * 4 == len(streamed) - 44 == round(seconds * RATE) * 4
    samples = read(streamed)
    for start in (1, 9, 17, 30):  # before, after the hold, near the end
        window = slice(start * RATE, (start + 1) * RATE)
        assert abs(peak_hz(samples[window, 0]) - 440) < 5, start
        assert abs(peak_hz(samples[window, 1]) - 880) < 5, start
    assert np.abs(samples[round(10.1 * RATE) : round(15.9 * RATE), 0]).max() == 0  # on hold
    assert np.abs(samples[round(37.1 * RATE) :, 1]).max() == 0  # the callee has left
    assert np.abs(samples[round(37.1 * RATE) :, 0]).max() > 1000  # the caller has not


@pytest.mark.parametrize("codec", [OPUS, PCMA])
def test_a_packet_without_payload_is_skipped_not_the_end_of_the_decode(codec: str) -> None:
    # an empty payload given to FFmpeg is the signal that the stream ended: every packet after
    # it would fail to decode, and the export with it
    packets = long_call(codec, 2)
    hollow = packets[10]
    packets[10] = Packet(hollow.leg, hollow.seq, hollow.timestamp, hollow.arrival, b"")
    data, seconds = stereo_wav_bytes(packets, codec)
    assert seconds == pytest.approx(2.0, abs=0.01)
    samples = read(data)
    assert abs(peak_hz(samples[RATE // 2 : RATE, 0]) - 440) < 5


def test_one_g711_leg_back_from_hold_streams_to_the_same_wav(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a leg alone, back from 6 s on hold: its own catching up moves the window, which must not
    # hand its track over a second time from within (the samples came out twice, misplaced)
    packets = [p for p in long_call(PCMU, 20) if p.leg == "caller"]
    whole, seconds = stereo_wav_bytes(packets, PCMU)
    monkeypatch.setattr(audio, "WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(audio, "REORDER_SECONDS", 0.1)
    assert stereo_wav_bytes(packets, PCMU) == (whole, seconds)
    assert abs(peak_hz(read(whole)[17 * RATE : 18 * RATE, 0]) - 440) < 5


def random_call(seed: int) -> tuple[str, list[Packet]]:
    """A call of a few seconds with what networks and phones do: a leg that joins late, leaves
    early or never comes, a hold (no packets), lost, duplicated and overtaken packets, RTP
    timestamps from anywhere (wrapping). Fixed by `seed`."""
    rng = random.Random(seed)
    codec = rng.choice([OPUS, PCMU, PCMA])
    step, seconds = (FRAME if codec == OPUS else 160), rng.randint(3, 12)
    packets = []
    for leg, hz, lag in (("caller", 440.0, 0.0), ("callee", 880.0, rng.random() * 3)):
        if rng.random() < 0.1:
            continue
        tone = opus_tone(hz, 50) if codec == OPUS else [g711(codec, hz, n * 160) for n in range(50)]
        first = rng.randint(0, seconds * 25)
        last = rng.randint(first + 10, seconds * 50)
        hold = sorted(rng.sample(range(first, last), 2)) if rng.random() < 0.5 else [0, 0]
        base = rng.randrange(1 << 32)
        for n in range(first, last):
            if hold[0] <= n < hold[1] or rng.random() < 0.02:
                continue
            arrival = 100 + lag + n * 0.02 + rng.random() * 0.01
            packets.append(Packet(leg, n % 65536, (base + n * step) % (1 << 32), arrival,
                                  tone[n % 50]))  # fmt: skip
            if rng.random() < 0.01:
                packets.append(packets[-1])
    packets.sort(key=lambda p: p.arrival)
    for _ in range(len(packets) // 20):
        at = rng.randrange(max(1, len(packets) - 4))
        other = at + rng.randint(1, 3)
        if other < len(packets):
            packets[at], packets[other] = packets[other], packets[at]
    return codec, packets


@pytest.mark.parametrize("seed", range(8))
def test_random_calls_stream_to_the_same_wav_whatever_the_window(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec, packets = random_call(seed)
    whole = stereo_wav_bytes(packets, codec)
    monkeypatch.setattr(audio, "WINDOW_SECONDS", 1.0)
    monkeypatch.setattr(audio, "REORDER_SECONDS", 0.25)
    monkeypatch.setattr(audio, "REORDER_PACKETS", 50)
    assert stereo_wav_bytes(packets, codec) == whole
