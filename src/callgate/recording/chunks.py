"""The recording file: a plain header, then AES-256-GCM encrypted chunks.

    file   = "CGREC1 " <recording id, 32 hex> "\n"  chunk*
    chunk  = "CHNK" index:u32 last:u8 length:u32  nonce(12)  ciphertext+tag(length - 12)

The associated data of chunk i binds it to its recording, its position and whether it is the
last one: AAD = "callgate-recording-v1" | recording id | i:u32 | last:u8. A chunk moved, copied
from another recording, or a recording cut short after its last chunk fails to decrypt; each
chunk's SHA-256 is also listed in the recording's metadata, so a bundle is checked offline
without the key.

A chunk's plaintext is a run of packets: leg:u8 seq:u16 timestamp:u32 arrival:f64 length:u16
payload (the RTP payload as the party sent it). All integers big-endian.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CGREC1 "
HEADER_BYTES = len(MAGIC) + 32 + 1
CHUNK_HEAD = struct.Struct(">4sIBI")
CHUNK_TAG = b"CHNK"
NONCE_BYTES = 12
MAX_CHUNK_BYTES = 4 << 20
AAD_LABEL = b"callgate-recording-v1"
PACKET_HEAD = struct.Struct(">BHIdH")
LEGS = ("caller", "callee")


class ChunkError(Exception):
    """A chunk that is not what it should be; `index` names it (None: the file header)."""

    def __init__(self, index: int | None, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class Packet:
    leg: str
    seq: int
    timestamp: int
    arrival: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    last: bool
    data: bytes  # nonce + ciphertext + tag
    raw: bytes  # the chunk as stored, head included (what its SHA-256 covers)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def file_header(recording_id: str) -> bytes:
    if len(recording_id) != 32:
        raise ValueError("recording id must be 32 hex characters")
    return MAGIC + recording_id.encode("ascii") + b"\n"


def _aad(recording_id: str, index: int, last: bool) -> bytes:
    return AAD_LABEL + recording_id.encode("ascii") + struct.pack(">IB", index, int(last))


class PacketRecord(Protocol):
    """What a stored packet record is made from: a `Packet`, or the anchor's `MediaPacket`
    itself (the recorder buffers those as they come, with no copy)."""

    @property
    def leg(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def payload(self) -> bytes: ...


def encode_packets(packets: Sequence[PacketRecord]) -> bytes:
    parts = []
    for p in packets:
        parts.append(
            PACKET_HEAD.pack(LEGS.index(p.leg), p.seq, p.timestamp, p.arrival, len(p.payload))
        )
        parts.append(p.payload)
    return b"".join(parts)


def decode_packets(plain: bytes, index: int) -> list[Packet]:
    packets, offset = [], 0
    while offset < len(plain):
        if offset + PACKET_HEAD.size > len(plain):
            raise ChunkError(index, f"chunk {index}: packet record cut short")
        leg, seq, ts, arrival, length = PACKET_HEAD.unpack_from(plain, offset)
        offset += PACKET_HEAD.size
        if leg >= len(LEGS) or offset + length > len(plain):
            raise ChunkError(index, f"chunk {index}: bad packet record")
        packets.append(Packet(LEGS[leg], seq, ts, arrival, plain[offset : offset + length]))
        offset += length
    return packets


def seal(key: bytes, recording_id: str, index: int, last: bool, plain: bytes) -> bytes:
    """One stored chunk (head + nonce + ciphertext)."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + AESGCM(key).encrypt(nonce, plain, _aad(recording_id, index, last))
    return CHUNK_HEAD.pack(CHUNK_TAG, index, int(last), len(sealed)) + sealed


def open_chunk(key: bytes, recording_id: str, chunk: Chunk, position: int) -> bytes:
    """The plaintext of the chunk found at `position`; ChunkError naming it if it is not right."""
    if chunk.index != position:
        raise ChunkError(position, f"chunk {position}: found chunk {chunk.index} in its place")
    nonce, sealed = chunk.data[:NONCE_BYTES], chunk.data[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, sealed, _aad(recording_id, position, chunk.last))
    except InvalidTag:
        raise ChunkError(position, f"chunk {position}: fails authentication (altered)") from None


def read_header(data: bytes) -> str:
    if len(data) < HEADER_BYTES or not data.startswith(MAGIC) or data[HEADER_BYTES - 1] != 0x0A:
        raise ChunkError(None, "not a callgate recording (bad header)")
    return data[len(MAGIC) : HEADER_BYTES - 1].decode("ascii", "replace")


def iter_chunks(data: bytes) -> Iterator[Chunk]:
    """The chunks of a recording file's bytes, in stored order. A chunk cut short at the end of
    the file (a crash mid-write) raises ChunkError naming its position."""
    handle = io.BytesIO(data)
    handle.seek(HEADER_BYTES)
    return read_chunks(handle)


def read_chunks(handle: BinaryIO) -> Iterator[Chunk]:
    """The chunks from `handle` (positioned after the file header) to its end, one at a time:
    a recording of any length is read in at most `MAX_CHUNK_BYTES` at once."""
    position = 0
    while head := handle.read(CHUNK_HEAD.size):
        if len(head) < CHUNK_HEAD.size:
            raise ChunkError(position, f"chunk {position}: cut short (incomplete head)")
        tag, index, last, length = CHUNK_HEAD.unpack(head)
        if tag != CHUNK_TAG or not NONCE_BYTES < length <= MAX_CHUNK_BYTES:
            raise ChunkError(position, f"chunk {position}: bad chunk head")
        body = handle.read(length)
        if len(body) < length:
            raise ChunkError(position, f"chunk {position}: cut short")
        yield Chunk(index, bool(last), body, head + body)
        position += 1
