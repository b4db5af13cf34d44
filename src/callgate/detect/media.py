"""Recognizers for the non-STUN protocols of a real-time session; pure functions over one payload.

RFC 7983 §7 demultiplexes a media socket on the first byte: 0-3 STUN, 20-63 DTLS, 64-79 TURN
ChannelData, 128-191 RTP/RTCP. These functions check the rest of each header.
"""

from __future__ import annotations

import re
import struct

_H = struct.Struct("!H")
_RTP = struct.Struct("!BBHII")

# RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611): SR, RR, SDES, BYE, APP, RTPFB,
# PSFB, XR. With RFC 5761 §4 these are the values RTP payload types 72-79 would collide with.
RTCP_TYPES = frozenset(range(200, 208))
USE_SRTP = 0x000E  # TLS extension type of use_srtp (RFC 5764 §4.1.1)
_DTLS_VERSIONS = {0xFEFF, 0xFEFD, 0xFEFC}
_SIP = re.compile(
    rb"(?:(?:INVITE|REGISTER|ACK|BYE|CANCEL|OPTIONS|PRACK|SUBSCRIBE|NOTIFY|PUBLISH|INFO|REFER"
    rb"|MESSAGE|UPDATE) sips?:[^\r\n]* SIP/2\.0\r?\n|SIP/2\.0 \d{3} )"
)
# Static RTP payload types (RFC 3551 §6): audio 0-23, video 24-34.
_AUDIO_PT = frozenset(range(0, 24))
_VIDEO_PT = frozenset(range(24, 35))


def rtp_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(payload type, sequence number, timestamp, SSRC) of an RTP v2 packet, or None
    (RFC 3550 §5.1); RTCP packet types are excluded (RFC 5761 §4)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    _, second, seq, stamp, ssrc = _RTP.unpack_from(data, 0)
    pt = second & 0x7F
    if 72 <= pt <= 79:
        return None
    header = 12 + (data[0] & 0x0F) * 4
    if header > len(data):
        return None
    return pt, seq, stamp, ssrc


def is_rtcp(data: bytes) -> bool:
    """A (compound) RTCP packet, possibly SRTCP with its trailer (RFC 3550 §6.4, RFC 3711 §3.4):
    version 2, known packet type, and a first length that fits the datagram."""
    if len(data) < 8 or data[0] >> 6 != 2 or data[1] not in RTCP_TYPES:
        return False
    length: int = (_H.unpack_from(data, 2)[0] + 1) * 4
    return length <= len(data)


def media_kind(pt: int, size: int) -> str:
    if pt in _AUDIO_PT:
        return "audio"
    if pt in _VIDEO_PT:
        return "video"
    return "video" if size > 700 else "audio" if size < 400 else "audio/video"


def dtls_record(data: bytes) -> tuple[bool, bool, int | None] | None:
    """(is a handshake, offers/accepts use_srtp, the description of a fatal alert sent in the
    clear) for a DTLS datagram, or None when not DTLS (RFC 6347 §4.1 record header)."""
    if len(data) < 13:
        return None
    if not 20 <= data[0] <= 25 or _H.unpack_from(data, 1)[0] not in _DTLS_VERSIONS:
        return None
    handshake = False
    srtp = False
    alert: int | None = None
    pos = 0
    while pos + 13 <= len(data) and 20 <= data[pos] <= 25:
        length = _H.unpack_from(data, pos + 11)[0]
        body = data[pos + 13 : pos + 13 + length]
        if data[pos] == 22:
            handshake = True
            srtp = srtp or _hello_has_use_srtp(body)
        elif data[pos] == 21 and _plain_fatal_alert(data[pos + 3 : pos + 5], body):
            alert = body[1]
        pos += 13 + length
    return handshake, srtp, alert


def _plain_fatal_alert(epoch: bytes, body: bytes) -> bool:
    """An alert record of epoch 0 is plaintext: level, description; level 2 is fatal (RFC 5246
    §7.2). Later epochs are encrypted."""
    return epoch == b"\0\0" and len(body) == 2 and body[0] == 2


# The fatal alerts a failed DTLS-SRTP handshake usually ends with (RFC 5246 §7.2).
ALERTS = {10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
          42: "bad_certificate", 43: "unsupported_certificate", 46: "certificate_unknown",
          47: "illegal_parameter", 48: "unknown_ca", 51: "decrypt_error",
          70: "protocol_version", 71: "insufficient_security", 80: "internal_error"}  # fmt: skip


def _hello_has_use_srtp(body: bytes) -> bool:
    """Whether an unencrypted ClientHello/ServerHello fragment lists use_srtp (RFC 5764 §4.1.1)."""
    if len(body) < 12 or body[0] not in (1, 2):
        return False
    hello = body[12:]
    pos = 2 + 32  # version, random
    if pos >= len(hello):
        return False
    pos += 1 + hello[pos]  # session id
    if body[0] == 1:
        if pos >= len(hello):
            return False
        pos += 1 + hello[pos]  # cookie
        if pos + 2 > len(hello):
            return False
        pos += 2 + _H.unpack_from(hello, pos)[0]  # cipher suites
        if pos >= len(hello):
            return False
        pos += 1 + hello[pos]  # compression methods
    else:
        pos += 3  # cipher suite, compression method
    if pos + 2 > len(hello):
        return False
    end = min(len(hello), pos + 2 + _H.unpack_from(hello, pos)[0])
    pos += 2
    while pos + 4 <= end:
        ext, length = struct.unpack_from("!HH", hello, pos)
        if ext == USE_SRTP:
            return True
        pos += 4 + length
    return False


def is_channel_data(data: bytes, stream: bool) -> bool:
    """TURN ChannelData (RFC 8656 §12.4): channel 0x4000-0x4FFF (0x7FFF for RFC 5766 clients),
    length matching the datagram; over TCP padded to 4 bytes."""
    if len(data) < 4 or not 0x40 <= data[0] <= 0x7F:
        return False
    length: int = _H.unpack_from(data, 2)[0]
    extra = len(data) - 4 - length
    return 0 <= extra < 4 if stream else extra == 0 or (0 <= extra < 4 and (4 + length) % 4 != 0)


def is_sip(data: bytes) -> bool:
    """A SIP request or status line (RFC 3261 §7.1, §7.2) at the start of the payload."""
    return bool(data[:1].isalpha()) and _SIP.match(data, 0, 300) is not None


def is_quic_long_header(data: bytes) -> bool:
    """QUIC long header with a known version (RFC 9000 §17.2, RFC 9369, gQUIC Q0xx)."""
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        return False
    version = data[1:5]
    return version in (b"\x00\x00\x00\x01", b"\x6b\x33\x43\xcf") or version[:3] in (
        b"\xff\x00\x00",
        b"Q05",
        b"Q04",
        b"T05",
    )


def is_wireguard(data: bytes) -> bool:
    """A WireGuard message (whitepaper §5.4): type 1-4, three zero bytes, and the fixed sizes of
    handshake initiation (148), response (92), cookie reply (64) or a padded transport message."""
    if len(data) < 32 or data[1:4] != b"\x00\x00\x00":
        return False
    kind, size = data[0], len(data)
    return (kind, size) in ((1, 148), (2, 92), (3, 64)) or (kind == 4 and size % 16 == 0)


OPENVPN_DATA_V2 = 9  # opcodes (OpenVPN's protocol description, ssl_pkt.h): P_DATA_V2
_OPENVPN_CLIENT_RESETS = (7, 10)  # P_CONTROL_HARD_RESET_CLIENT_V2, _V3


def is_openvpn_client_reset(data: bytes) -> bool:
    """The first message of an OpenVPN session over UDP: opcode 7 or 10 in the high five bits,
    key id 0, the 8-byte session ID, then (after a tls-auth HMAC of 20 or 32 bytes, packet ID and
    time, when used) an empty ACK array and message packet-ID 0."""
    if len(data) < 14 or data[0] & 7 or data[0] >> 3 not in _OPENVPN_CLIENT_RESETS:
        return False
    return any(data[at : at + 5] == bytes(5) for at in (9, 9 + 28, 9 + 40) if len(data) >= at + 5)


def openvpn_data_key(data: bytes) -> bytes | None:
    """The opcode/key-id byte and 3-byte peer ID of an OpenVPN P_DATA_V2 message (constant in
    a tunnel's direction), or None when `data` cannot be one."""
    if len(data) < 20 or data[0] >> 3 != OPENVPN_DATA_V2:
        return None
    return data[:4]
