"""Allocate request rules (RFC 8656 §7.2) kept apart from the dispatcher: option validation,
relay socket binding with EVEN-PORT / RESERVATION-TOKEN / address families, and lifetimes.
Pure apart from the injected allocator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from callgate.stun import attributes as attrs
from callgate.stun.constants import FAMILY_IPV4, FAMILY_IPV6, PROTO_UDP, Attr
from callgate.stun.message import Message, StunDecodeError
from callgate.turn.allocation import Allocation, RelayEndpoint
from callgate.turn.config import TurnConfig
from callgate.turn.relay import InsufficientCapacity

_T = TypeVar("_T")


class Reject(Exception):
    """Ends a request handler with an error response carrying `code` and `extra` attributes."""

    def __init__(self, code: int, *extra: tuple[int, bytes], reason: str | None = None) -> None:
        self.code = code
        self.extra = extra
        self.reason = reason  # a precise reason phrase; the standard one when None


def unpack(fn: Callable[[bytes], _T], value: bytes) -> _T:
    """Decode an attribute value; malformed -> 400 Bad Request."""
    try:
        return fn(value)
    except StunDecodeError as exc:
        raise Reject(400, reason=f"Malformed attribute: {exc}") from exc


class Allocator(Protocol):
    def supports(self, family: int) -> bool: ...

    def allocate(
        self, family: int, allocation: Allocation, *, even: bool = False, reserve: bool = False
    ) -> tuple[RelayEndpoint, bytes | None]:
        """A relay socket reading for `allocation`; with `reserve`, a token for the next port."""
        ...

    def take_reservation(self, token: bytes, allocation: Allocation) -> RelayEndpoint | None: ...


@dataclass(frozen=True, slots=True)
class AllocateOptions:
    families: tuple[int, ...]
    even: bool
    reserve: bool
    token: bytes | None


def allocate_options(message: Message, allocator: Allocator) -> AllocateOptions:
    """Validate REQUESTED-TRANSPORT, address families, EVEN-PORT and RESERVATION-TOKEN
    (RFC 8656 §7.2 steps 2-8; RFC 6156 for IPv6)."""
    transport = message.get(Attr.REQUESTED_TRANSPORT)
    if transport is None:
        raise Reject(400, reason="Missing REQUESTED-TRANSPORT")
    if unpack(attrs.unpack_requested_transport, transport) != PROTO_UDP:
        raise Reject(442)
    requested = message.get(Attr.REQUESTED_ADDRESS_FAMILY)
    additional = message.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
    token = message.get(Attr.RESERVATION_TOKEN)
    even_value = message.get(Attr.EVEN_PORT)
    if token is not None and (even_value is not None or requested is not None):
        raise Reject(400, reason="RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY")
    if token is not None and len(token) != 8:
        raise Reject(400, reason="RESERVATION-TOKEN must be 8 bytes")
    if requested is not None and additional is not None:
        raise Reject(400, reason="REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together")
    families: tuple[int, ...] = (FAMILY_IPV4,)
    if requested is not None:
        family = unpack(attrs.unpack_family, requested)
        if family not in (FAMILY_IPV4, FAMILY_IPV6) or not allocator.supports(family):
            raise Reject(440)
        families = (family,)
    if additional is not None:
        if unpack(attrs.unpack_family, additional) != FAMILY_IPV6:
            raise Reject(400, reason="ADDITIONAL-ADDRESS-FAMILY must be IPv6")
        families = (FAMILY_IPV4, FAMILY_IPV6)
    even = even_value is not None
    reserve = even and unpack(attrs.unpack_even_port, even_value or b"\x00")
    return AllocateOptions(families, even, reserve, token)


def bind_relays(
    allocation: Allocation, allocator: Allocator, options: AllocateOptions
) -> bytes | tuple[int, bytes] | None:
    """Open the relay sockets; returns a reservation token, an ADDRESS-ERROR-CODE attribute
    (dual allocation without IPv6), or None. Raises Reject(508) when no port can be had."""
    if options.token is not None:
        relay = allocator.take_reservation(options.token, allocation)
        if relay is None:
            raise Reject(508)
        allocation.relays[relay.family] = relay
        allocation.relay_address = relay.address
        return None
    result: bytes | tuple[int, bytes] | None = None
    families = options.families
    for family in families:
        if family == FAMILY_IPV6 and len(families) > 1 and not allocator.supports(family):
            # Dual allocation without IPv6 here: IPv4 only, with ADDRESS-ERROR-CODE (§7.2).
            error = attrs.pack_address_error_code(family, 440, "IPv6 unavailable")
            result = (Attr.ADDRESS_ERROR_CODE, error)
            continue
        try:
            relay, reservation = allocator.allocate(
                family, allocation, even=options.even, reserve=options.reserve
            )
        except InsufficientCapacity as exc:
            allocation.close()
            raise Reject(508) from exc
        allocation.relays[family] = relay
        if reservation is not None:
            result = reservation
    allocation.relay_address = next(iter(allocation.relays.values())).address
    return result


def granted_lifetime(message: Message, config: TurnConfig, *, allow_zero: bool) -> int:
    """Granted lifetime (RFC 8656 §7.2 step 9, §8): min(requested, max), but never below the
    default; the default if absent; 0 (delete) only for Refresh."""
    value = message.get(Attr.LIFETIME)
    if value is None:
        return config.default_lifetime
    requested = unpack(attrs.unpack_uint32, value)
    if requested == 0 and allow_zero:
        return 0
    if requested < config.default_lifetime:
        return config.default_lifetime
    return min(requested, config.max_lifetime)
