"""Trunks to a carrier: inbound calls to DIDs, and the dial plan for calls out (docs/sip.md,
"Trunks", "Dialling out").

A trunk is known by the addresses its INVITEs come from (IP-based trunk authentication, as
carriers do it); its DIDs map E.164 numbers (ITU-T E.164: "+", country code, at most 15 digits)
to the callgate user they ring, or to a group whose members all ring (`did_groups`). Numbers arrive in many spellings; `normalise` turns the usual
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
from collections.abc import Callable
from dataclasses import dataclass, field

from callgate.sip.digest_client import CarrierAuth

# Emergency numbers are per country: a code that is an emergency number in one country is a
# chargeable operator or service elsewhere (UK 100: the operator, who connects onward calls), so
# a trunk lets through only its own country's (its `emergency` setting, default from its
# `country_code`) and 112 (ITU E.161.1, also on every GSM network) and 911 without one.
EMERGENCY_BY_COUNTRY: dict[str, frozenset[str]] = {
    "1": frozenset({"911"}),
    "30": frozenset({"112", "100", "166", "199"}),
    "31": frozenset({"112"}),
    "32": frozenset({"112", "100", "101"}),
    "33": frozenset({"112", "15", "17", "18", "114"}),
    "34": frozenset({"112", "091", "092", "061", "080"}),
    "39": frozenset({"112", "113", "115", "118"}),
    "41": frozenset({"112", "117", "118", "144"}),
    "43": frozenset({"112", "122", "133", "144"}),
    "44": frozenset({"999", "112"}),
    "45": frozenset({"112", "114"}),
    "46": frozenset({"112"}),
    "47": frozenset({"112", "110", "113"}),
    "48": frozenset({"112", "997", "998", "999"}),
    "49": frozenset({"112", "110"}),
    "52": frozenset({"911"}),
    "55": frozenset({"190", "192", "193"}),
    "61": frozenset({"000", "112"}),
    "64": frozenset({"111"}),
    "65": frozenset({"999", "995"}),
    "81": frozenset({"110", "119"}),
    "82": frozenset({"112", "119"}),
    "86": frozenset({"110", "119", "120"}),
    "91": frozenset({"112", "100", "101", "102"}),
    "353": frozenset({"112", "999"}),
}
EMERGENCY_DEFAULT = frozenset({"112", "911"})
# Every code some country uses: what a SIP phone dialling without any trunk is told it cannot
# reach (runtime/sip_calls.py), never what is let through.
EMERGENCY = EMERGENCY_DEFAULT.union(*EMERGENCY_BY_COUNTRY.values())
# ASCII digits only: `\d` would take fullwidth or Arabic-Indic digits, which a deny rule's prefix
# does not match but a carrier may fold to the number the rule denies.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"^[0-9]{1,15}$")


def emergency_numbers(country_code: str | None) -> frozenset[str]:
    """The emergency numbers a trunk in `country_code` lets through by default."""
    if country_code is None:
        return EMERGENCY_DEFAULT
    return EMERGENCY_BY_COUNTRY.get(country_code, frozenset({"112"}))


def normalise(number: str) -> str | None:
    """`+44 20 7123-4567`, `0044207…`, `tel`-style visual separators → `+442071234567`; None
    when it is not an international number (national formats need a per-trunk rule)."""
    text = _SEPARATORS.sub("", number.split(";", 1)[0]).removeprefix("tel:")
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if E164.match(text) else None


def short_code(dialled: str) -> str:
    """`dialled` without separators, `tel:` and a leading `+`: how emergency codes compare."""
    return _SEPARATORS.sub("", dialled.split(";", 1)[0]).removeprefix("tel:").lstrip("+")


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
    max_calls_per_user: int | None = None  # a user's outbound calls at once on it
    max_calls_per_user_hour: int | None = None  # a user's outbound calls in any hour
    options_interval: float = 0.0  # seconds between OPTIONS pings to `outbound` (0: none)
    options_failures: int = 2  # pings in a row unanswered that mark it down (trunk_pings.py)
    auth: CarrierAuth | None = None  # our account at the carrier: answers its 401/407
    # Let through whatever the rules say; None: its country's (emergency_numbers)
    emergency: frozenset[str] | None = None
    did_groups: dict[str, str] = field(default_factory=dict)  # E.164 number -> ring group
    # SRTP with SDES keys both ways, never plain RTP (docs/sip.md, "SRTP towards carriers")
    srtp_required: bool = False

    def emergency_codes(self) -> frozenset[str]:
        return (
            self.emergency if self.emergency is not None else emergency_numbers(self.country_code)
        )

    def may_dial(self, groups: tuple[str, ...] | frozenset[str]) -> bool:
        """No dial-out without a rule: only members of `dial_out_groups`."""
        return bool(self.dial_out_groups & set(groups))

    def route(self, number: str) -> str | None:
        """The handle a DID rings, or None."""
        normal = self.normalise(number)
        return self.dids.get(normal) if normal is not None else None

    def route_group(self, number: str) -> str | None:
        """The group a DID rings (all its members at once), or None."""
        normal = self.normalise(number)
        return self.did_groups.get(normal) if normal is not None else None

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


def _never(name: str) -> bool:
    return False


class Trunks:
    def __init__(self, trunks: list[Trunk]) -> None:
        self.all = tuple(trunks)
        self._by_address = {address: t for t in trunks for address in t.addresses}
        self.outbound = next((t for t in trunks if t.outbound is not None), None)

    def by_address(self, address: str) -> Trunk | None:
        return self._by_address.get(address)

    def dial(self, dialled: str, down: Callable[[str], bool] = _never) -> Dialled | None:
        """The dial plan: which trunk takes `dialled`, and as what number; None when no
        trunk can (not a number, national without a trunk that knows its country, no route).
        The longest route wins (config order among equals); a trunk `down` (its carrier stopped
        answering OPTIONS, trunk_pings.py) is passed over for the next that carries the number,
        if any is not down — else it is tried all the same."""
        if self.outbound is None:
            return None
        code = short_code(dialled)
        if code in self.outbound.emergency_codes():
            # only to trunks where this code is an emergency number too (elsewhere it may be a
            # chargeable service)
            others = [t for t in self.all if t.outbound is not None and t is not self.outbound]
            able = [self.outbound, *(t for t in others if code in t.emergency_codes())]
            trunk = next((t for t in able if not down(t.name)), self.outbound)
            return Dialled(trunk, code, code, True)
        found: list[tuple[int, Trunk, str]] = []
        for trunk in self.all:
            number = trunk.normalise(dialled)
            length = trunk.carries(number) if number is not None else 0
            if number is not None and length:
                found.append((length, trunk, number))
        if not found:
            return None
        found.sort(key=lambda item: -item[0])  # stable: config order among equal lengths
        _, trunk, number = next((f for f in found if not down(f[1].name)), found[0])
        return Dialled(trunk, number, trunk.carrier_number(number), False)
