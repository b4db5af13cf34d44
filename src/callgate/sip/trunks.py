"""Trunks to a carrier: inbound calls to DIDs, and the dial plan for calls out (docs/sip.md,
"Trunks", "Dialling out").

A trunk is known by the addresses its INVITEs come from (IP-based trunk authentication, as
carriers do it); its DIDs map E.164 numbers (ITU-T E.164: "+", country code, at most 15 digits)
to the callgate user they ring. Numbers arrive in many spellings; `normalise` turns the usual
international ones into E.164 and refuses the rest; a trunk with a `country_code` also reads
national numbers (`020 7946 0000` with country code 44 → `+442079460000`, ITU-T E.164 §6.2.2:
the national (trunk) prefix is dropped).

Dial plan: a number goes out through the outbound trunk whose `routes` (E.164 prefixes) match
it longest; a trunk without routes carries any number. Emergency short codes go out through
the first outbound trunk, as dialled. The carrier gets the number in the trunk's
`number_format`: `e164` (`+442079460000`) or `national` (`02079460000`, for numbers in the
trunk's own country).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callgate.sip.digest_client import CarrierAuth

# Emergency numbers (ITU E.161.1 112, NANP 911, UK 999, AU 000…): refused with a precise reason
# until trunks exist (docs/sip.md, "Emergency numbers").
EMERGENCY = frozenset({"112", "911", "999", "000", "110", "118", "119", "100", "101", "102"})
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"^\d{1,15}$")


def normalise(number: str) -> str | None:
    """`+44 20 7123-4567`, `0044207…`, `tel`-style visual separators → `+442071234567`; None
    when it is not an international number (national formats need a per-trunk rule)."""
    text = _SEPARATORS.sub("", number.split(";", 1)[0]).removeprefix("tel:")
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if E164.match(text) else None


def is_emergency(dialled: str) -> bool:
    return _SEPARATORS.sub("", dialled).removeprefix("tel:").lstrip("+") in EMERGENCY


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    addresses: frozenset[str]
    dids: dict[str, str] = field(default_factory=dict)  # E.164 number -> callgate handle
    outbound: tuple[str, int] | None = None  # the carrier's SIP address for our INVITEs (UDP)
    dial_out_groups: frozenset[str] = frozenset()  # who may dial numbers (emergency: anyone)
    caller_id: str | None = None  # E.164 presented as the caller
    routes: tuple[str, ...] = ()  # E.164 prefixes it carries ("+44"); none: any number
    country_code: str | None = None  # national numbers ("0…") are read in this country
    national_prefix: str = "0"
    number_format: str = "e164"  # how the carrier gets the number: "e164" or "national"
    max_calls: int | None = None  # calls at once, both ways (trunk_limits.py)
    max_cps: float | None = None  # new calls a second
    auth: CarrierAuth | None = None  # our account at the carrier: answers its 401/407

    def may_dial(self, groups: tuple[str, ...] | frozenset[str]) -> bool:
        """No dial-out without a rule: only members of `dial_out_groups`."""
        return bool(self.dial_out_groups & set(groups))

    def route(self, number: str) -> str | None:
        """The handle a DID rings, or None."""
        normal = self.normalise(number)
        return self.dids.get(normal) if normal is not None else None

    def normalise(self, number: str) -> str | None:
        """E.164 of an international number, or of a national one in `country_code`."""
        international = normalise(number)
        if international is not None or self.country_code is None:
            return international
        text = _SEPARATORS.sub("", number.split(";", 1)[0]).removeprefix("tel:")
        prefix = self.national_prefix
        if not text.startswith(prefix) or not _DIGITS.match(text):
            return None
        return normalise(f"+{self.country_code}{text[len(prefix) :]}")

    def carries(self, e164: str) -> int:
        """How long the route prefix matching `e164` is (1 for a trunk without routes), or 0."""
        if self.outbound is None:
            return 0
        if not self.routes:
            return 1
        return max((len(r) for r in self.routes if e164.startswith(r)), default=0)

    def carrier_number(self, e164: str) -> str:
        """`e164` as this carrier wants it in the Request-URI."""
        own = f"+{self.country_code}" if self.country_code else None
        if self.number_format == "national" and own is not None and e164.startswith(own):
            return self.national_prefix + e164[len(own) :]
        return e164


@dataclass(frozen=True, slots=True)
class Dialled:
    """Where a dialled number goes: the trunk, the number in E.164 (or the emergency code),
    and the number in the carrier's format."""

    trunk: Trunk
    number: str
    carrier_number: str
    emergency: bool


class Trunks:
    def __init__(self, trunks: list[Trunk]) -> None:
        self.all = tuple(trunks)
        self._by_address = {address: t for t in trunks for address in t.addresses}
        self.outbound = next((t for t in trunks if t.outbound is not None), None)

    def by_address(self, address: str) -> Trunk | None:
        return self._by_address.get(address)

    def dial(self, dialled: str) -> Dialled | None:
        """The dial plan: which trunk takes `dialled`, and as what number; None when no
        trunk can (not a number, national without a trunk that knows its country, no route)."""
        if self.outbound is None:
            return None
        if is_emergency(dialled):
            code = _SEPARATORS.sub("", dialled).removeprefix("tel:").lstrip("+")
            return Dialled(self.outbound, code, code, True)
        best: tuple[int, Trunk, str] | None = None
        for trunk in self.all:
            number = trunk.normalise(dialled)
            length = trunk.carries(number) if number is not None else 0
            if number is not None and length and (best is None or length > best[0]):
                best = (length, trunk, number)
        if best is None:
            return None
        _, trunk, number = best
        return Dialled(trunk, number, trunk.carrier_number(number), False)
