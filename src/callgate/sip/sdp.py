"""SDP for plain RTP phones (RFC 4566, offer/answer RFC 3264): one audio stream, G.711 only.

A phone's offer is read for its connection address, audio port and payload types; we answer with
the first of PCMU (0), PCMA (8) it offers — the codecs the WebRTC side can take without
transcoding. Anything else (no audio, only other codecs, SRTP profiles, IPv6 addresses we do not
serve) is `SdpError`, answered `488 Not Acceptable Here` (RFC 3261 §21.4.26).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

MAX_SDP = 8 * 1024
CODECS = {0: "pcmu", 8: "pcma"}  # static payload types we forward (RFC 3551 §6)


class SdpError(ValueError):
    """The SDP cannot be used (the reason is safe to send as a SIP reason phrase)."""


@dataclass(frozen=True, slots=True)
class AudioOffer:
    address: str  # where the phone wants RTP
    port: int
    payload_types: tuple[int, ...]

    def choose(self) -> str:
        """Our codec: the first the phone lists that we forward."""
        for pt in self.payload_types:
            if pt in CODECS:
                return CODECS[pt]
        raise SdpError("No common codec (PCMU or PCMA)")


def parse_audio(sdp: bytes) -> AudioOffer:
    """The first audio stream of a session description."""
    if len(sdp) > MAX_SDP:
        raise SdpError("SDP too large")
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_address: str | None = None
    media_address: str | None = None
    audio: tuple[int, tuple[int, ...]] | None = None
    in_audio = False
    for line in text.replace("\r\n", "\n").split("\n"):
        kind, _, value = line.partition("=")
        if kind == "m":
            if audio is not None:
                break  # only the first audio stream is ours
            parts = value.split()
            in_audio = len(parts) >= 4 and parts[0] == "audio"
            if in_audio:
                if parts[2] != "RTP/AVP":
                    raise SdpError("Only RTP/AVP audio is supported")
                if not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
                    raise SdpError("Bad audio port")
                if not all(p.isdigit() and int(p) < 128 for p in parts[3:]):
                    raise SdpError("Bad payload type")
                audio = (int(parts[1]), tuple(int(p) for p in parts[3:]))
        elif kind == "c":
            address = _connection(value)
            if audio is None and not in_audio:
                session_address = address
            elif in_audio:
                media_address = address
    if audio is None:
        raise SdpError("No audio stream")
    found = media_address or session_address
    if found is None:
        raise SdpError("No connection address")
    return AudioOffer(found, audio[0], audio[1])


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] != "IP4":
        raise SdpError("Only IN IP4 connection addresses are supported")
    try:
        ipaddress.IPv4Address(parts[2])
    except ValueError:
        raise SdpError("Connection address is not an IPv4 address") from None
    return parts[2]


def audio_sdp(address: str, port: int, codec: str) -> bytes:
    """Our offer or answer: one sendrecv audio stream at `address:port` with `codec`."""
    pt = {name: number for number, name in CODECS.items()}[codec]
    session = secrets.randbits(31)
    lines = [
        "v=0",
        f"o=callgate {session} {session} IN IP4 {address}",
        "s=callgate",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {pt}",
        f"a=rtpmap:{pt} {codec.upper()}/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
