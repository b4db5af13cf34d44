"""Key presses sent as SIP INFO (RFC 2976's INFO method, used without an Info Package, RFC 6086
§2's "legacy INFO usage"), as many desk phones and PBXs still do instead of RFC 4733 events.

Two bodies are in use and both are read:

- `application/dtmf-relay` (Cisco's format, the common one): lines `Signal=5` and
  `Duration=160` (milliseconds);
- `application/dtmf`: the key alone (`5`), or its RFC 4733 event code (`0`-`15`).

Keys are 0-9, *, #, A-D; some phones send `10` for `*` and `11` for `#` (the event codes). A
duration outside MIN_MS-MAX_MS is clamped; a missing one is DEFAULT_MS. The key then plays like
an RFC 4733 event (media/dtmf.py `DtmfToTones.press`).
"""

from __future__ import annotations

KEYS = "0123456789*#ABCD"  # RFC 4733 §3.2 event codes 0-15, in order
TYPES = ("application/dtmf-relay", "application/dtmf")
DEFAULT_MS, MIN_MS, MAX_MS = 250, 40, 5000
MAX_BODY = 256


class InfoError(ValueError):
    """An INFO we do not take; `status` 415 (another body type) or 400 (a bad body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_info(content_type: str, body: bytes) -> tuple[str, int]:
    """(key, duration in ms) of a DTMF INFO body; InfoError otherwise."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in TYPES:
        raise InfoError(415, "Unsupported Media Type")
    if len(body) > MAX_BODY:
        raise InfoError(400, "Bad Request (DTMF body too long)")
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InfoError(400, "Bad Request (DTMF body is not ASCII)") from None
    if kind == "application/dtmf":
        return _key(text), DEFAULT_MS
    fields: dict[str, str] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    if "signal" not in fields:
        raise InfoError(400, "Bad Request (no Signal)")
    duration = fields.get("duration", str(DEFAULT_MS))
    if not duration.isdigit() or len(duration) > 6:
        raise InfoError(400, "Bad Request (bad Duration)")
    return _key(fields["signal"]), min(max(int(duration), MIN_MS), MAX_MS)


def _key(text: str) -> str:
    key = text.upper()
    if len(key) == 1 and key in KEYS:
        return key
    if key.isdigit() and len(key) <= 2 and int(key) < len(KEYS):
        return KEYS[int(key)]  # an event code: 10 is *, 11 is #
    raise InfoError(400, "Bad Request (not a DTMF key)")
