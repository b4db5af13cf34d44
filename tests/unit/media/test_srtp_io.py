"""`SrtpIo`: the anchor's SRTP protect and unprotect in its own buffer give exactly what
pylibsrtp's `Session` methods give, refuse what they refuse, and keep the session's replay state."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from callgate.media import srtp_io
from callgate.media.srtp_io import BUFFER_BYTES, SrtpIo

# V=2, X=1 (one-byte extension header: `mid`, RFC 8285), M=0, PT 111 (Opus), SSRC 0x01020304
HEADER = struct.pack("!BBHII", 0x90, 111, 0, 0, 0x01020304) + b"\xbe\xde\x00\x01\x10\x30\x00\x00"


def sessions(key: bytes) -> tuple[Session, Session]:
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


def rtp(seq: int, timestamp: int, payload: bytes) -> bytes:
    return HEADER[:2] + struct.pack("!HI", seq, timestamp) + HEADER[8:] + payload


@pytest.fixture(params=["direct", "through-session-methods"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param != "direct":
        monkeypatch.setattr(srtp_io, "_BINDING", None)  # as if pylibsrtp's binding differed
    return str(request.param)


def test_protect_gives_what_the_session_gives_and_the_party_can_read_it(mode: str) -> None:
    key = os.urandom(30)
    ours, reference = SrtpIo(sessions(key)[0]), sessions(key)[0]
    assert ours.direct is (mode == "direct")
    _, party = sessions(key)
    for seq in range(65530, 65536):  # across nothing special, then the sequence number wraps
        payload = os.urandom(60 + seq % 7)
        sent = ours.protect(HEADER, payload, seq, seq * 960)
        assert isinstance(sent, bytes)
        assert sent == reference.protect(rtp(seq, seq * 960, payload))  # AES-CM: deterministic
        assert party.unprotect(sent) == rtp(seq, seq * 960, payload)


def test_unprotect_authenticates_decrypts_and_refuses_replays_and_tampering(mode: str) -> None:
    key = os.urandom(30)
    tx, rx = sessions(key)
    ours = SrtpIo(rx)
    first = tx.protect(rtp(1, 960, b"\x01" * 80))
    second = tx.protect(rtp(2, 1920, b"\x02" * 80))
    size = ours.unprotect(memoryview(first))  # as the relay hands it over
    assert bytes(ours.buffer[:size]) == rtp(1, 960, b"\x01" * 80)
    assert ours.unprotect(first) == -1  # replayed (RFC 3711 §3.3.2)
    tampered = bytearray(second)
    tampered[30] ^= 1
    assert ours.unprotect(bytes(tampered)) == -1  # fails authentication
    size = ours.unprotect(second)  # the genuine one still passes after the refusals
    assert bytes(ours.buffer[:size]) == rtp(2, 1920, b"\x02" * 80)
    assert ours.unprotect(bytes(BUFFER_BYTES)) == -1  # longer than any datagram it takes


def test_a_packet_too_long_to_protect_is_refused(mode: str) -> None:
    ours = SrtpIo(sessions(os.urandom(30))[0])
    with pytest.raises(ValueError, match="too long"):
        ours.protect(HEADER, bytes(BUFFER_BYTES), 1, 960)


def test_a_libsrtp_refusal_raises_as_the_session_would() -> None:
    tx = Session()  # no stream: libsrtp has no context for the packet's SSRC
    ours = SrtpIo(tx)
    with pytest.raises(pylibsrtp.Error):
        ours.protect(HEADER, b"\x00" * 20, 1, 960)
    with pytest.raises(pylibsrtp.Error):
        tx.protect(rtp(1, 960, b"\x00" * 20))
