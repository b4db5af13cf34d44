"""SDP for plain RTP phones (RFC 4566, offer/answer RFC 3264): one audio stream, G.711 only.

A phone's offer is read for its connection address, audio port and payload types; we answer with
the first of PCMU (0), PCMA (8) it offers — the codecs the WebRTC side can take without
transcoding. `RTP/SAVP` is taken with SDES keys (RFC 4568 `a=crypto`, suite
AES_CM_128_HMAC_SHA1_80, the one every SRTP phone and trunk has): we answer with our own key.
Anything else (no audio, only other codecs, SRTP without a usable key, IPv6 addresses we do not
serve) is `SdpError`, answered `488 Not Acceptable Here` (RFC 3261 §21.4.26).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from dataclasses import dataclass

MAX_SDP = 8 * 1024
CODECS = {0: "pcmu", 8: "pcma"}  # static payload types we forward (RFC 3551 §6)
SUITE = "AES_CM_128_HMAC_SHA1_80"  # RFC 4568 §6.2.1
KEY_SALT = 30  # bytes of inline key ‖ salt for SUITE


class SdpError(ValueError):
    """The SDP cannot be used (the reason is safe to send as a SIP reason phrase)."""


@dataclass(frozen=True, slots=True)
class Crypto:
    """One `a=crypto` line we can use (RFC 4568 §9.1)."""

    tag: int
    key_salt: bytes  # the sender's master key ‖ salt


@dataclass(frozen=True, slots=True)
class AudioOffer:
    address: str  # where the phone wants RTP
    port: int
    payload_types: tuple[int, ...]
    crypto: Crypto | None = None  # RTP/SAVP: the key the phone sends with

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
    secure = False
    crypto: Crypto | None = None
    in_audio = False
    for line in text.replace("\r\n", "\n").split("\n"):
        kind, _, value = line.partition("=")
        if kind == "m":
            if audio is not None:
                break  # only the first audio stream is ours
            parts = value.split()
            in_audio = len(parts) >= 4 and parts[0] == "audio"
            if in_audio:
                if parts[2] not in ("RTP/AVP", "RTP/SAVP"):
                    raise SdpError("Only RTP/AVP or RTP/SAVP audio is supported")
                secure = parts[2] == "RTP/SAVP"
                if not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
                    raise SdpError("Bad audio port")
                if not all(p.isdigit() and int(p) < 128 for p in parts[3:]):
                    raise SdpError("Bad payload type")
                audio = (int(parts[1]), tuple(int(p) for p in parts[3:]))
        elif kind == "a" and in_audio and value.startswith("crypto:") and crypto is None:
            crypto = _crypto(value.removeprefix("crypto:"))
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
    if secure and crypto is None:
        raise SdpError(f"RTP/SAVP without an a=crypto {SUITE} key")
    return AudioOffer(found, audio[0], audio[1], crypto if secure else None)


def _crypto(value: str) -> Crypto | None:
    """`tag suite inline:KEY[|lifetime][|MKI]`: ours when the suite is SUITE and the key
    decodes to 30 bytes; lifetimes and MKIs are not supported (None)."""
    parts = value.split()
    if len(parts) < 3 or not parts[0].isdigit() or parts[1] != SUITE:
        return None
    if len(parts) > 3 or not parts[2].startswith("inline:") or "|" in parts[2]:
        return None  # session parameters, lifetime or MKI: not supported
    try:
        key = base64.b64decode(parts[2].removeprefix("inline:"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return Crypto(int(parts[0]) % 1_000_000_000, key) if len(key) == KEY_SALT else None


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] != "IP4":
        raise SdpError("Only IN IP4 connection addresses are supported")
    try:
        ipaddress.IPv4Address(parts[2])
    except ValueError:
        raise SdpError("Connection address is not an IPv4 address") from None
    return parts[2]


def audio_sdp(address: str, port: int, codec: str, crypto: Crypto | None = None) -> bytes:
    """Our offer or answer: one sendrecv audio stream at `address:port` with `codec`; with
    `crypto` (our key, the phone's tag) RTP/SAVP."""
    pt = {name: number for number, name in CODECS.items()}[codec]
    session = secrets.randbits(31)
    lines = [
        "v=0",
        f"o=callgate {session} {session} IN IP4 {address}",
        "s=callgate",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if crypto else 'RTP/AVP'} {pt}",
        f"a=rtpmap:{pt} {codec.upper()}/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    if crypto is not None:
        key = base64.b64encode(crypto.key_salt).decode()
        lines.append(f"a=crypto:{crypto.tag} {SUITE} inline:{key}")
    return ("\r\n".join(lines) + "\r\n").encode()
