"""What a recording's `codec` says (its row and metadata): the RTP payload format of the packets
it holds, as `name/clock/channels` (RFC 4855 media subtypes, lower case). Kept apart from
audio.py so that the server and the CLI know the names without loading the decoders."""

from __future__ import annotations

OPUS = "opus/48000/2"  # calls between callgate's own clients
PCMU = "pcmu/8000/1"  # G.711 µ-law: calls from SIP phones and trunks
PCMA = "pcma/8000/1"  # G.711 A-law
# the anchor's codec names (media/packets.py CODEC_CLOCKS) → a recording's
BY_ANCHOR_CODEC = {"opus": OPUS, "pcmu": PCMU, "pcma": PCMA}
