"""QUIC client Initial packets decrypted, to read the ClientHello they carry (RFC 9001 §5.2: the
Initial keys derive from the client's first Destination Connection ID and a published salt, so
anyone on the path can remove Initial protection; RFC 9369 for QUIC version 2).

`crypto_frames` returns the CRYPTO frames (RFC 9000 §19.6) of every client Initial packet in a
datagram, coalesced packets included (RFC 9000 §12.2). Anything malformed, another version, or a
packet that does not authenticate yields nothing, never an exception.
"""

from __future__ import annotations

from functools import lru_cache

V1, V2 = 0x00000001, 0x6B3343CF
_SALTS = {  # RFC 9001 §5.2, RFC 9369 §3.3.1
    V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
_LABELS = {V1: (b"quic key", b"quic iv", b"quic hp"),  # RFC 9001 §5.1
           V2: (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")}  # RFC 9369 §3.3.2  # fmt: skip
_INITIAL_TYPE = {V1: 0, V2: 1}  # long header packet type of Initial (RFC 9369 §3.2 renumbers)
_RETRY_TYPE = {V1: 3, V2: 0}
CRYPTO, PADDING, PING, ACK, ACK_ECN = 0x06, 0x00, 0x01, 0x02, 0x03

Keys = tuple[bytes, bytes, bytes]  # AEAD key, IV, header protection key


def long_header_dcid(datagram: bytes) -> bytes | None:
    """The Destination Connection ID of a long-header packet of a version we can decrypt."""
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return None
    if int.from_bytes(datagram[1:5], "big") not in _SALTS:
        return None
    size = datagram[5]
    return datagram[6 : 6 + size] if size <= 20 and len(datagram) >= 6 + size else None


def expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with an empty context (RFC 8446 §7.1): HKDF-Expand (RFC 5869 §2.3)
    with SHA-256, whose output here is at most one block."""
    import hashlib  # here: `callgate detect` starts without them unless a QUIC Initial is met
    import hmac

    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()[:length]


@lru_cache(maxsize=1024)
def client_keys(version: int, dcid: bytes) -> Keys:
    """The client Initial key, IV and header protection key (RFC 9001 §5.2)."""
    import hashlib
    import hmac

    initial = hmac.new(_SALTS[version], dcid, hashlib.sha256).digest()  # HKDF-Extract
    secret = expand_label(initial, b"client in", 32)
    key, iv, hp = _LABELS[version]
    return expand_label(secret, key, 16), expand_label(secret, iv, 12), expand_label(secret, hp, 16)


def crypto_frames(datagram: bytes, original_dcid: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of the CRYPTO frames in the datagram's client Initial packets, decrypted
    with the keys of `original_dcid` (the DCID of the client's first Initial)."""
    found: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(datagram):
        parsed = _long_packet(datagram, pos)
        if parsed is None:
            break
        version, ptype, pn_offset, end = parsed
        if ptype == _INITIAL_TYPE[version]:
            plain = _unprotect(
                datagram[pos:end], pn_offset - pos, client_keys(version, original_dcid)
            )
            if plain is None:
                break
            found.extend(_frames(plain))
        pos = end
    return found


def _long_packet(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """(version, packet type, packet number offset, end) of the long-header packet at `pos`
    (RFC 9000 §17.2); None for anything else, a Retry or a length that overruns."""
    if pos + 7 > len(data) or not data[pos] & 0x80:
        return None
    version = int.from_bytes(data[pos + 1 : pos + 5], "big")
    if version not in _SALTS:
        return None
    ptype = (data[pos] >> 4) & 3
    if ptype == _RETRY_TYPE[version]:
        return None
    at = pos + 5
    for _ in range(2):  # Destination, then Source Connection ID
        if at >= len(data) or data[at] > 20:
            return None
        at += 1 + data[at]
    if ptype == _INITIAL_TYPE[version]:
        token = _varint(data, at)
        if token is None:
            return None
        at = token[1] + token[0]
    length = _varint(data, at)
    if length is None or length[1] + length[0] > len(data):
        return None
    return version, ptype, length[1], length[1] + length[0]


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, position after) of a variable-length integer (RFC 9000 §16)."""
    if pos >= len(data):
        return None
    size = 1 << (data[pos] >> 6)
    if pos + size > len(data):
        return None
    value = data[pos] & 0x3F
    for byte in data[pos + 1 : pos + size]:
        value = (value << 8) | byte
    return value, pos + size


def _unprotect(packet: bytes, pn_offset: int, keys: Keys) -> bytes | None:
    """Remove header protection (RFC 9001 §5.4) and open the payload (§5.3); None when the
    packet does not authenticate."""
    # imported here: `callgate detect` starts without cryptography unless a QUIC Initial is met
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv, hp = keys
    sample = packet[pn_offset + 4 : pn_offset + 20]
    if len(sample) < 16:
        return None
    # AES-ECB on one 16-byte sample is what RFC 9001 §5.4.3 specifies for the mask, not a mode
    # of encrypting data
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()  # noqa: S305
    mask = encryptor.update(sample) + encryptor.finalize()
    first = packet[0] ^ (mask[0] & 0x0F)  # long header: the low four bits are protected
    pn_len = (first & 0x03) + 1
    pn = bytes(
        b ^ m for b, m in zip(packet[pn_offset : pn_offset + pn_len], mask[1:], strict=False)
    )
    header = bytes([first]) + packet[1:pn_offset] + pn
    number = int.from_bytes(pn, "big")  # early packets: the truncated number is the number
    nonce = (int.from_bytes(iv, "big") ^ number).to_bytes(12, "big")
    try:
        return AESGCM(key).decrypt(nonce, packet[pn_offset + pn_len :], header)
    except InvalidTag:
        return None


def _frames(plain: bytes) -> list[tuple[int, bytes]]:
    """CRYPTO frames among the frames an Initial may carry (RFC 9000 §17.2.2: PADDING, PING,
    ACK, CRYPTO, CONNECTION_CLOSE); parsing stops at anything else."""
    found: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(plain):
        kind = plain[pos]
        pos += 1
        if kind in (PADDING, PING):
            continue
        if kind == CRYPTO:
            offset = _varint(plain, pos)
            length = _varint(plain, offset[1]) if offset else None
            if offset is None or length is None or length[1] + length[0] > len(plain):
                break
            found.append((offset[0], plain[length[1] : length[1] + length[0]]))
            pos = length[1] + length[0]
        elif kind in (ACK, ACK_ECN):
            skipped = _skip_ack(plain, pos, kind == ACK_ECN)
            if skipped is None:
                break
            pos = skipped
        else:
            break
    return found


def _skip_ack(plain: bytes, pos: int, ecn: bool) -> int | None:
    """The position after an ACK frame's fields (RFC 9000 §19.3)."""
    values: list[int] = []
    for _ in range(4):  # largest acknowledged, delay, range count, first range
        read = _varint(plain, pos)
        if read is None:
            return None
        values.append(read[0])
        pos = read[1]
    for _ in range(2 * values[2] + (3 if ecn else 0)):
        read = _varint(plain, pos)
        if read is None:
            return None
        pos = read[1]
    return pos
