"""Classic (peer-to-peer) Skype over UDP, from its obfuscated framing, as published:

- **Start of Message** (Wireshark's Skype dissector, the OpenSkype notes): every UDP message starts
  with a 2-byte message ID, then a byte whose low nibble is the function (0x2 payload, 0x3 resend,
  0x5 / 0x7 CRC error, 0xd audio / NAK, 0xf fragment); the rest is RC4 ciphertext.
- **nDPI's historic rule** (protocols/skype.c, 2011-2015, read and re-derived, not copied): one of a
  UDP flow's first four payloads is 3 bytes with function 0xd, or ≥ 16 bytes with a third byte of
  exactly 0x02 and a first byte other than 0x30 (SNMP) or 0x00 (CAPWAP): an *anchor*.
- **Bonfiglio et al., "Revealing Skype Traffic: When Randomness Plays with You"** (SIGCOMM 2007):
  Pearson's chi-square test on each 4-bit group of a message's first bytes, over many messages,
  tells random groups (the ciphertext) from deterministic ones (the function field).
- **Host-level inference**: Skype uses one UDP port per host for everything (probes to super
  nodes, calls), so a local UDP socket proven to speak Skype carries all its flows.

One anchor in one flow is weak (a random third byte is 0x02 once in 256), so a verdict needs either
one flow whose own messages pass the framing test (`framing`), or a local socket whose flows to at
least `MIN_PEERS` distinct peers carry anchors — at least half of its flows — with message IDs that
differ and ciphertext that is random across those flows (`socket_evidence`).
"""

from __future__ import annotations

from collections.abc import Sequence

OTHER_PORTS = frozenset({80, 1119})  # UDP/80, Battle.net: nDPI's exceptions to its rule
FUNCTIONS = frozenset({0x2, 0x3, 0x5, 0x7, 0xD, 0xF})  # low nibble of the third byte
HEAD = 12  # bytes of each message kept for the chi-square test (24 nibble groups)
HEADS = 16  # messages kept per flow
MIN_MESSAGES = 8  # a flow's own framing test needs this many messages
MIN_PEERS = 6  # anchored flows to distinct peers that make a local socket Skype
FUNCTION_SHARE = 0.9  # messages whose function nibble is a Skype function
BODY_GROUPS = tuple(range(6, 2 * HEAD))  # bytes 3..11: ciphertext
# Pearson's X² of one nibble group over n messages has 15 degrees of freedom: ≈15 when uniform,
# exactly 15·n when constant. Simulated: uniform groups stay under 42 (99.9 %) for n = 4…16, and
# the mean of the 18 ciphertext groups under 20.
RANDOM_MEAN_MAX = 25.0


def is_anchor(payload: bytes) -> bool:
    """nDPI's historic per-packet Skype rule (see the module docstring)."""
    if len(payload) == 3:
        return payload[2] & 0x0F == 0xD
    return len(payload) >= 16 and payload[0] not in (0x00, 0x30) and payload[2] == 0x02


def chi_square(heads: Sequence[bytes], group: int) -> float:
    """Pearson's X² of 4-bit group `group` (0 = high nibble of byte 0) against uniform."""
    counts = [0] * 16
    byte, low = divmod(group, 2)
    for head in heads:
        value = head[byte]
        counts[value & 0x0F if low else value >> 4] += 1
    expected = len(heads) / 16
    return sum((c - expected) ** 2 for c in counts) / expected


def random_groups(heads: Sequence[bytes]) -> bool:
    """Messages whose IDs differ (a random or counting ID: at least 3 in 4 distinct) and whose
    ciphertext groups look uniformly random on average. The ID's own bits are not required to be
    uniform: nDPI's current rule keeps only some first-byte values, so real IDs may not be."""
    if 4 * len({head[:2] for head in heads}) < 3 * len(heads):
        return False
    body = sum(chi_square(heads, g) for g in BODY_GROUPS) / len(BODY_GROUPS)
    return body <= RANDOM_MEAN_MAX


def framing(heads: Sequence[bytes]) -> str | None:
    """Bonfiglio's chi-square classification on one flow's messages: varying IDs, a Skype
    function in (nearly) every message, random ciphertext. The evidence, or None."""
    if len(heads) < MIN_MESSAGES:
        return None
    functions = sum(head[2] & 0x0F in FUNCTIONS for head in heads)
    if functions < FUNCTION_SHARE * len(heads) or not random_groups(heads):
        return None
    return (f"Skype UDP framing in {len(heads)} messages: varying message IDs, Skype function "
            f"nibble in {functions}, random ciphertext (chi-square)")  # fmt: skip


def socket_evidence(anchors: Sequence[bytes], peers: int, flows: int) -> str | None:
    """Host-level test of a local UDP socket: `anchors` are the anchor messages of its flows
    (one per flow), to `peers` distinct peer addresses, out of `flows` flows with payload."""
    if peers < MIN_PEERS or 2 * len(anchors) < flows or not random_groups(anchors):
        return None
    return (
        f"local UDP port speaks Skype: {len(anchors)} of its {flows} flows, to {peers} peers, "
        f"open with a Skype message (random IDs and ciphertext, chi-square)"
    )
