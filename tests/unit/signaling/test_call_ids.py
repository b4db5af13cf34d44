"""Call ids drawn a block at a time from the CSPRNG keep uuid4's shape and never repeat."""

from __future__ import annotations

import uuid

from callgate.signaling.call_ids import BLOCK, CallIds


def test_ids_are_uuid4_hex_and_distinct_across_blocks() -> None:
    new_id = CallIds()
    ids = [new_id() for _ in range(3 * BLOCK + 7)]  # crosses three refills
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and len(value) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_two_generators_do_not_share_ids() -> None:
    first, second = CallIds(), CallIds()
    assert not {first() for _ in range(BLOCK)} & {second() for _ in range(BLOCK)}
