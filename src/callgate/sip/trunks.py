"""Trunks from a carrier: inbound calls to DIDs (docs/sip.md, "Trunks").

A trunk is known by the addresses its INVITEs come from (IP-based trunk authentication, as
carriers do it); its DIDs map E.164 numbers (ITU-T E.164: "+", country code, at most 15 digits)
to the callgate user they ring. Numbers arrive in many spellings; `normalise` turns the usual
ones into E.164 and refuses the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Emergency numbers (ITU E.161.1 112, NANP 911, UK 999, AU 000…): refused with a precise reason
# until trunks exist (docs/sip.md, "Emergency numbers").
EMERGENCY = frozenset({"112", "911", "999", "000", "110", "118", "119", "100", "101", "102"})
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SEPARATORS = re.compile(r"[\s\-.()]")


def normalise(number: str) -> str | None:
    """`+44 20 7123-4567`, `0044207…`, `tel`-style visual separators → `+442071234567`; None
    when it is not an international number (national formats need a per-trunk rule)."""
    text = _SEPARATORS.sub("", number.split(";", 1)[0])
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if E164.match(text) else None


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    addresses: frozenset[str]
    dids: dict[str, str] = field(default_factory=dict)  # E.164 number -> callgate handle
    outbound: tuple[str, int] | None = None  # the carrier's SIP address for our INVITEs (UDP)
    dial_out_groups: frozenset[str] = frozenset()  # who may dial numbers (emergency: anyone)
    caller_id: str | None = None  # E.164 presented as the caller

    def may_dial(self, groups: tuple[str, ...] | frozenset[str]) -> bool:
        """No dial-out without a rule: only members of `dial_out_groups`."""
        return bool(self.dial_out_groups & set(groups))

    def route(self, number: str) -> str | None:
        """The handle a DID rings, or None."""
        normal = normalise(number)
        return self.dids.get(normal) if normal is not None else None


class Trunks:
    def __init__(self, trunks: list[Trunk]) -> None:
        self._by_address = {address: t for t in trunks for address in t.addresses}

        self.outbound = next((t for t in trunks if t.outbound is not None), None)

    def by_address(self, address: str) -> Trunk | None:
        return self._by_address.get(address)
