"""A lean leg keeps receive statistics for at most `MAX_SSRCS` of its party's RTP sources: a new
source past them replaces the least recently seen (counted), so a party that changes its SSRC
keeps being forwarded while one sending from ever new SSRCs gets no more memory on the server
(no sockets, no DTLS: the path's inbound parsing on its own)."""

from __future__ import annotations

import struct
from typing import Any

from callgate.media import srtp_path
from callgate.media.packets import MediaPacket
from callgate.media.srtp_path import MAX_SSRCS, SrtpPath

PT = 111


class _Clear:
    """Stands for the leg's SRTP session: the datagram is already the RTP packet."""

    def __init__(self) -> None:
        self.buffer = bytearray(1500)

    def unprotect(self, data: bytes) -> int:
        self.buffer[: len(data)] = data
        return len(data)


def _path(handled: list[MediaPacket]) -> SrtpPath:
    path = SrtpPath.__new__(SrtpPath)
    fields: dict[str, Any] = {
        "name": "caller", "received": 0, "rejected": 0, "ssrc_replaced": 0, "_rx_io": _Clear(),
        "_payload_type": PT, "_streams": {}, "_clock": 48000,
        "_seen": srtp_path._SeqTs(0, 0), "_handler": handled.append, "_last_ssrc": None,
    }  # fmt: skip
    for name, value in fields.items():
        setattr(path, name, value)
    return path


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, PT, seq, seq * 960, ssrc) + b"\x01" * 20


def test_a_new_source_past_the_cap_replaces_the_least_recently_seen() -> None:
    handled: list[MediaPacket] = []
    path = _path(handled)
    for ssrc in range(1, 11):  # ten sources, two packets each: every one is forwarded
        for seq in (1, 2):
            path._srtp_in(_rtp(seq, ssrc))
    assert len(path._streams) == MAX_SSRCS and list(path._streams) == list(range(7, 11))
    assert [p.ssrc for p in handled] == [ssrc for ssrc in range(1, 11) for _ in (1, 2)]
    assert path.received == 20 and path.ssrc_replaced == 10 - MAX_SSRCS
    path._srtp_in(_rtp(3, 7))  # seen again: now the most recent, so 8 goes first
    path._srtp_in(_rtp(1, 11))
    assert list(path._streams) == [9, 10, 7, 11] and path.ssrc_replaced == 11 - MAX_SSRCS
    assert handled[-1].ssrc == 11
