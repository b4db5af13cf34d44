"""Client pieces that need no network: ICE configuration from hello, audio, session file, stats."""

from __future__ import annotations

import asyncio
import stat
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCIceTransportPolicy

from callgate.client.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ToneTrack,
    dominant_frequency,
    read_wav,
    write_tone_wav,
)
from callgate.client.ice import audio_streams, call_hello, negotiated_codec, rtc_configuration
from callgate.client.session import Session, load_session, save_session
from callgate.client.signaling import ws_url
from callgate.client.softphone import _nth_path

TURN = {
    "urls": ["turn:198.51.100.7:3478?transport=udp", "turn:198.51.100.7:3478?transport=tcp"],
    "username": "1767225600:alice",
    "credential": "c2VjcmV0",
}


def test_relay_policy_and_turn_credentials_come_from_hello() -> None:
    config = rtc_configuration({"ice_servers": [TURN], "ice_transport_policy": "relay"})
    assert config.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    (server,) = config.iceServers
    assert server.urls == TURN["urls"]
    assert (server.username, server.credential) == (TURN["username"], TURN["credential"])


def test_policy_all_and_a_stun_only_entry() -> None:
    config = rtc_configuration(
        {"ice_servers": [{"urls": "stun:198.51.100.7:3478"}], "ice_transport_policy": "all"}
    )
    assert config.iceTransportPolicy == RTCIceTransportPolicy.ALL
    (server,) = config.iceServers
    assert server.urls == "stun:198.51.100.7:3478"
    assert server.username is None and server.credential is None


def test_a_call_that_carries_ice_servers_is_configured_with_them() -> None:
    """Separate relays: `call.incoming` names the caller's relay first; the callee's call uses
    that list, not hello's."""
    hello = {"ice_servers": [{"urls": "stun:198.51.100.7:3478"}], "ice_transport_policy": "all"}
    turn = {"urls": ["turn:198.51.100.8:3478?transport=udp"], "username": "u", "credential": "c"}
    configured = call_hello(hello, {"ice_transport_policy": "all", "ice_servers": [turn]})
    (server,) = rtc_configuration(configured).iceServers
    assert server.urls == turn["urls"] and server.username == "u"
    assert hello["ice_servers"] == [{"urls": "stun:198.51.100.7:3478"}]  # hello untouched


async def test_a_call_the_server_makes_relay_only_gathers_no_host_candidate() -> None:
    """hello said "all"; `call.incoming` says this call is relay-only (a policy rule): the
    callee's peer connection gathers no host candidate, so raddr never carries its address."""
    from aiortc import RTCPeerConnection

    hello = {"ice_servers": [], "ice_transport_policy": "all"}
    assert call_hello(hello, {"ice_transport_policy": "all"}) == hello
    configured = call_hello(hello, {"ice_transport_policy": "relay"})
    assert rtc_configuration(configured).iceTransportPolicy == RTCIceTransportPolicy.RELAY
    for config, host_expected in ((hello, True), (configured, False)):
        pc = RTCPeerConnection(rtc_configuration(config))
        try:
            pc.addTransceiver("audio")
            await pc.setLocalDescription(await pc.createOffer())
            assert ("typ host" in pc.localDescription.sdp) is host_expected
        finally:
            await pc.close()


@pytest.mark.parametrize("hello", [{"ice_servers": []}, {}, {"ice_servers": None}])
def test_no_servers_stay_no_servers_never_a_public_stun(hello: dict[str, Any]) -> None:
    config = rtc_configuration(hello)
    assert config.iceServers == []  # None would make aiortc use stun.l.google.com


async def test_the_peer_connection_gets_no_default_stun() -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(rtc_configuration({"ice_servers": []}))
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        gatherer = pc.getTransceivers()[0].sender.transport.transport.iceGatherer
        assert gatherer._connection.stun_server is None
        assert gatherer._connection.turn_server is None
        assert "typ srflx" not in pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.mark.parametrize(
    "hello",
    [
        {"ice_transport_policy": "nohost"},
        {"ice_servers": [{"username": "x"}]},
        {"ice_servers": ["turn:x"]},
        {"ice_servers": [{"urls": 5}]},
    ],
)
def test_malformed_hello_is_refused(hello: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        rtc_configuration(hello)


async def test_tone_track_frames_carry_the_tone() -> None:
    track = ToneTrack(440.0)
    frames = [await track.recv() for _ in range(10)]
    track.stop()
    assert all(f.sample_rate == SAMPLE_RATE and f.samples == FRAME_SAMPLES for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(10)]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    peak = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[int(np.argmax(spectrum))]
    assert abs(peak - 440.0) < 5.0  # 0.2 s: 5 Hz bins


@pytest.mark.parametrize("frequency", [300.0, 440.0, 1000.0, 3150.0])
def test_tone_wav_round_trip(tmp_path: Path, frequency: float) -> None:
    path = write_tone_wav(tmp_path / "tone.wav", frequency, 1.0)
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            1,
            2,
            SAMPLE_RATE,
        )
        assert reader.getnframes() == SAMPLE_RATE
    assert abs(dominant_frequency(path) - frequency) < 2.0


def test_dominant_frequency_of_a_stereo_file_with_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    mono = np.sin(2 * np.pi * 523.0 * t) * 6000 + rng.normal(0, 1500, t.size)
    stereo = np.column_stack([mono, mono]).astype("<i2")
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(stereo.tobytes())
    assert read_wav(path)[0].size == SAMPLE_RATE
    assert abs(dominant_frequency(path) - 523.0) < 2.0


def test_dominant_frequency_of_silence_is_an_error(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "silence.wav", 440.0, 0.0)
    with pytest.raises(ValueError, match="no audio"):
        dominant_frequency(path)


def test_session_file_is_private_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLGATE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert load_session() is None
    session = Session("http://127.0.0.1:8080", "alice", "tok", "2026-12-01T00:00:00Z", {"a": 1})
    path = save_session(session)
    assert path == tmp_path / "cfg" / "session.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_session() == session


def test_ws_url_from_the_server_url() -> None:
    assert ws_url("http://127.0.0.1:8080", "a b", "lap") == (
        "ws://127.0.0.1:8080/ws?token=a+b&device=lap"
    )
    assert ws_url("https://calls.example/", "t", "d").startswith("wss://calls.example/ws?")


ANSWER = """v=0
m=audio 9 UDP/TLS/RTP/SAVPF 96 0 8
a=rtpmap:96 opus/48000/2
a=rtpmap:0 PCMU/8000
"""


def test_negotiated_codec_is_the_answers_first() -> None:
    codec = negotiated_codec(ANSWER)
    assert codec is not None and (codec.name, codec.clock_rate) == ("opus", 48000)
    pcmu = negotiated_codec(ANSWER.replace("96 0 8", "0 96 8"))
    assert pcmu is not None and (pcmu.name, pcmu.clock_rate) == ("pcmu", 8000)
    assert negotiated_codec("v=0\n") is None


@dataclass
class Stat:
    type: str
    kind: str = "audio"
    packetsReceived: int = 0
    packetsLost: int = 0
    packetsSent: int = 0
    jitter: int = 0
    roundTripTime: float | None = None


def test_audio_streams_in_contract_units() -> None:
    report = {
        "in": Stat("inbound-rtp", packetsReceived=100, packetsLost=2, jitter=480),
        "out": Stat("outbound-rtp", packetsSent=120),
        "rin": Stat("remote-inbound-rtp", packetsLost=3, jitter=96, roundTripTime=0.0421),
        "transport": Stat("transport", kind="none"),
    }
    inbound, outbound = audio_streams(report, 48000)
    assert inbound == {
        "kind": "audio",
        "direction": "inbound",
        "packets": 100,
        "packets_lost": 2,
        "jitter_ms": 10.0,
        "rtt_ms": 42.1,
    }
    assert outbound == {
        "kind": "audio",
        "direction": "outbound",
        "packets": 120,
        "packets_lost": 3,
        "jitter_ms": 2.0,
        "rtt_ms": 42.1,
    }


def test_audio_streams_before_any_rtcp() -> None:
    (outbound,) = audio_streams({"out": Stat("outbound-rtp", packetsSent=7)}, 48000)
    assert outbound["packets"] == 7 and outbound["rtt_ms"] is None and outbound["jitter_ms"] is None


def test_recording_names_for_several_calls() -> None:
    assert _nth_path(Path("r/call.wav"), 1) == Path("r/call.wav")
    assert _nth_path(Path("r/call.wav"), 3) == Path("r/call-3.wav")
    assert _nth_path(None, 2) is None


async def test_play_source_reads_the_wav_file(tmp_path: Path) -> None:
    from callgate.client.audio import audio_source

    path = write_tone_wav(tmp_path / "play.wav", 700.0, 0.5)
    track = audio_source(path, None)
    try:
        frames = [await asyncio.wait_for(track.recv(), 30) for _ in range(5)]
    finally:
        track.stop()
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert track.kind == "audio" and np.abs(samples).max() > 1000


def test_sources_for_tone_and_silence() -> None:
    from callgate.client.audio import audio_source

    assert isinstance(audio_source(None, 300.0), ToneTrack)
    assert audio_source(None, None).kind == "audio"
