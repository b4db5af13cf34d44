"""What a recording's `codec` says (its row and metadata): the RTP payload format of the packets
it holds, as `name/clock/channels` (RFC 4855 media subtypes, lower case). Kept apart from
audio.py so that the server and the CLI know the names without loading the decoders."""

from __future__ import annotations

OPUS = "opus/48000/2"  # calls between callgate's own clients
PCMU = "pcmu/8000/1"  # G.711 µ-law: calls from SIP phones and trunks
PCMA = "pcma/8000/1"  # G.711 A-law
G722 = "g722/8000/1"  # G.722: 16 kHz samples on an 8 kHz RTP clock (RFC 3551 §4.5.2)
# the anchor's codec names (media/packets.py CODEC_CLOCKS) → a recording's
BY_ANCHOR_CODEC = {"opus": OPUS, "pcmu": PCMU, "pcma": PCMA, "g722": G722}
# A transcoded call's parties sent different codecs, and each is recorded as it sent it: its
# recording's codec names both, the caller's first: "opus/48000/2+pcmu/8000/1".
MIXED = "+"


def recording_codec(caller: str, callee: str | None = None) -> str:
    """A recording's codec from the anchor's names of what each party sends."""
    first, second = BY_ANCHOR_CODEC[caller], BY_ANCHOR_CODEC[callee or caller]
    return first if first == second else f"{first}{MIXED}{second}"


def leg_codecs(codec: str) -> tuple[str, str]:
    """(the caller's, the callee's) codec of a recording whose codec is `codec`."""
    caller, _, callee = codec.partition(MIXED)
    return caller, callee or caller
