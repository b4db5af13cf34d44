"""Text every backend can store.

PostgreSQL text cannot hold the NUL character (psycopg refuses the whole statement) while SQLite
keeps it. Strings that come from clients (a handle tried at sign-in, a reject reason, a device
label) are stored through `storable`: NUL becomes U+FFFD, the same on both backends, so a record
is never lost to one odd character and a query never fails on it.
"""

from __future__ import annotations

from typing import TypeVar

NUL = "\x00"
REPLACEMENT = "\ufffd"

T = TypeVar("T")


def storable(value: T) -> T:
    """`value` with NUL replaced when it is a string; anything else unchanged."""
    if isinstance(value, str) and NUL in value:
        return value.replace(NUL, REPLACEMENT)  # type: ignore[return-value]
    return value


def has_nul(value: str) -> bool:
    """True when no row can hold `value` as it is (a lookup by it finds nothing)."""
    return NUL in value
