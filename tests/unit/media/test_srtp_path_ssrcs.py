"""A lean leg keeps receive statistics for at most `MAX_SSRCS` of its party's RTP sources: an
authenticated party sending from ever new SSRCs is dropped (and counted), not given memory on
the server (no sockets, no DTLS: the path's inbound parsing on its own)."""

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
        "name": "caller", "received": 0, "rejected": 0, "ssrc_dropped": 0, "_rx_io": _Clear(),
        "_payload_type": PT, "_streams": {}, "_clock": 48000,
        "_seen": srtp_path._SeqTs(0, 0), "_handler": handled.append,
    }  # fmt: skip
    for name, value in fields.items():
        setattr(path, name, value)
    return path


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, PT, seq, seq * 960, ssrc) + b"\x01" * 20


def test_new_sources_past_the_cap_are_dropped_and_counted() -> None:
    handled: list[MediaPacket] = []
    path = _path(handled)
    for ssrc in range(1, 11):  # ten sources, two packets each
        for seq in (1, 2):
            path._srtp_in(_rtp(seq, ssrc))
    assert len(path._streams) == MAX_SSRCS
    assert sorted({p.ssrc for p in handled}) == list(range(1, MAX_SSRCS + 1))
    assert path.received == 2 * MAX_SSRCS and path.ssrc_dropped == 2 * (10 - MAX_SSRCS)
    path._srtp_in(_rtp(3, 1))  # the sources it keeps still flow
    assert handled[-1].ssrc == 1 and handled[-1].seq == 3
