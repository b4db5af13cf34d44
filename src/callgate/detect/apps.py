"""Evidence that names the application behind a STUN exchange.

Sources (the same kinds of signals nDPI's STUN dissector uses, re-derived from the specifications):
- Microsoft's MS-TURN / MS-ICE2 attributes ([MS-TURN] §2.2.2: MS-Version 0x8008, MS-Sequence-Number
  0x8050, Candidate-Identifier 0x8054, MS-Service-Quality 0x8055, bandwidth/site attributes
  0x8056-0x8062, MS-Implementation-Version 0x8070) → Microsoft Teams / Skype;
- WhatsApp's private attribute range 0x4000-0x4007 and its non-standard message types 0x0800-0x0802;
- Google's GOOG-* attributes 0xFF03/0xFF04 (Meet/Duo);
- the operator named by REALM or SOFTWARE (RFC 8489 §14.9, §14.14): "signal.org", "google.com", …

and, outside STUN, Discord's voice IP Discovery (`discord_ip_discovery`).
"""

from __future__ import annotations

from callgate.detect.stunscan import REALM, SOFTWARE, VENDOR_TYPES, StunInfo

MS_TEAMS = "Microsoft Teams/Skype"
DISCORD = "Discord"
WHATSAPP = "WhatsApp"
GOOGLE = "Google Meet"

_MS_ATTRS = frozenset({0x8008, 0x8050, 0x8055, 0x8056, 0x8057, 0x8058, 0x8059, 0x805A, 0x805B,
                       0x805C, 0x8061, 0x8062, 0x8070})  # fmt: skip
_WHATSAPP_ATTRS = frozenset(range(0x4000, 0x4008))
_GOOGLE_ATTRS = frozenset({0xFF03, 0xFF04})
# Substrings of REALM / SOFTWARE naming the operator (lower case) → application.
_NAMES = (
    ("signal.org", "Signal"),
    ("whispersystems", "Signal"),
    ("google", GOOGLE),
    ("facebook", "Facebook Messenger"),
    ("fbcdn", "Facebook Messenger"),
    ("whatsapp", WHATSAPP),
    ("viber", "Viber"),
    ("teams.microsoft", MS_TEAMS),
    ("skype", MS_TEAMS),
    ("zoom", "Zoom"),
    ("telegram", "Telegram"),
    ("discord", DISCORD),
    ("webex", "Webex"),
    ("jitsi", "Jitsi"),
    ("callgate", "callgate"),
)


def app_from_stun(info: StunInfo) -> tuple[str, str] | None:
    """(application, evidence) when the message names its application, else None."""
    names = info.types
    if info.method in VENDOR_TYPES:
        return WHATSAPP, f"WhatsApp STUN message type 0x{info.method:04X}"
    if names & _MS_ATTRS or _candidate_identifier(info):
        found = sorted(names & (_MS_ATTRS | {0x8054}))
        return MS_TEAMS, "MS-TURN attributes " + ", ".join(f"0x{t:04X}" for t in found)
    if names & _WHATSAPP_ATTRS:
        return WHATSAPP, "WhatsApp STUN attribute 0x4000-0x4007"
    if names & _GOOGLE_ATTRS:
        return GOOGLE, "GOOG STUN attribute 0xFF03/0xFF04"
    for attr, label in ((REALM, "REALM"), (SOFTWARE, "SOFTWARE")):
        value = info.get(attr)
        if value:
            text = value.decode("utf-8", "replace").lower()
            for needle, app in _NAMES:
                if needle in text:
                    return app, f"STUN {label} {value.decode('utf-8', 'replace')!r}"
    return None


def _candidate_identifier(info: StunInfo) -> bool:
    """[MS-ICE2] Candidate-Identifier (0x8054): 4 bytes, a digit then three zero bytes."""
    value = info.get(0x8054)
    return value is not None and len(value) == 4 and value[1:] == b"\x00\x00\x00"


_DISCOVERY_ADDRESS = frozenset(b"0123456789abcdefABCDEF.:")


def discord_ip_discovery(data: bytes) -> bool:
    """Whether a UDP payload is a Discord voice IP Discovery request or response (Discord developer
    documentation, "Voice Connections", IP Discovery): 74 bytes — type 0x0001 (request) or 0x0002
    (response), length 70, the SSRC, a 64-byte NUL-padded address (empty in a request, the
    client's public IPv4/IPv6 address as text in the response), the port. The exchange opens the
    UDP connection that then carries the voice (RTP)."""
    if len(data) != 74 or data[0] != 0 or data[1] not in (1, 2) or data[2:4] != b"\x00\x46":
        return False
    address = data[8:72]
    text = address.rstrip(b"\x00")
    if data[1] == 1:
        return not text or set(text) <= _DISCOVERY_ADDRESS
    return len(text) >= 2 and set(text) <= _DISCOVERY_ADDRESS
