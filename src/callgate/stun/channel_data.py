"""ChannelData messages (RFC 8656 §12.4): 2-byte channel number, 2-byte length, data.

Over TCP and TLS the message is padded to a multiple of 4 bytes (§12.5); over UDP padding is
optional and ignored. Channel numbers 0x4000-0x4FFF are RFC 8656's range; 0x5000-0x7FFF are
accepted too because RFC 5766 clients (Debian's coturn test tools) still use them.
"""

from __future__ import annotations

from callgate.stun.message import StunDecodeError

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFF
HEADER = 4


def valid_channel(channel: int) -> bool:
    return CHANNEL_MIN <= channel <= CHANNEL_MAX


def is_channel_data(data: bytes) -> bool:
    """RFC 7983 demux: first byte 64-127 (0x40-0x7F) is ChannelData."""
    return len(data) >= HEADER and 0x40 <= data[0] <= 0x7F


def encode(channel: int, data: bytes, *, pad: bool = False) -> bytes:
    header = channel.to_bytes(2, "big") + len(data).to_bytes(2, "big")
    if pad and len(data) % 4:
        return header + data + b"\x00" * (4 - len(data) % 4)
    return header + data


def decode(packet: bytes) -> tuple[int, bytes]:
    """Channel number and application data; trailing padding is ignored."""
    if len(packet) < HEADER:
        raise StunDecodeError(f"ChannelData too short: {len(packet)} bytes")
    channel = int.from_bytes(packet[:2], "big")
    if not valid_channel(channel):
        raise StunDecodeError(f"channel number 0x{channel:04x} outside 0x4000-0x7FFF")
    length = int.from_bytes(packet[2:4], "big")
    if HEADER + length > len(packet):
        raise StunDecodeError(
            f"ChannelData length {length} exceeds the {len(packet) - 4} bytes sent"
        )
    return channel, packet[HEADER : HEADER + length]


def framed_length(header: bytes | bytearray) -> int:
    """Bytes a stream-framed ChannelData occupies, padding included (TCP, §12.5)."""
    length = int.from_bytes(header[2:4], "big")
    return HEADER + length + (4 - length % 4) % 4
