"""The shared ledger of relay workers (turn/ledger.py): quotas and reservations that two worker
processes see alike. Two handles on one file stand for two workers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import cast

import pytest

from callgate.stun.constants import FAMILY_IPV4
from callgate.turn.allocation import Allocation
from callgate.turn.counters import TurnCounters
from callgate.turn.ledger import SharedLedger, summed_counters
from callgate.turn.relay import InsufficientCapacity, RelayAllocator


@pytest.fixture
def workers(tmp_path: Path) -> tuple[SharedLedger, SharedLedger]:
    path = tmp_path / "ledger.sqlite"
    SharedLedger.create(path)
    return SharedLedger(path, 0), SharedLedger(path, 1)


def test_quotas_count_every_workers_claims(workers: tuple[SharedLedger, SharedLedger]) -> None:
    w0, w1 = workers
    assert w0.claim("a1", "alice", [("10.0.0.1", 50000)], max_total=3, max_user=2) is None
    assert w1.claim("a2", "alice", [("10.0.0.1", 50100)], max_total=3, max_user=2) is None
    per_user = w0.claim("a3", "alice", [], max_total=3, max_user=2)
    assert per_user == "Allocation Quota Reached: 2 per user (max_allocations_per_user)"
    assert w0.claim("b1", "bob", [], max_total=3, max_user=2) is None
    full = w1.claim("b2", "bob", [], max_total=3, max_user=2)
    assert full == "Allocation Quota Reached: server full (max_allocations 3)"
    assert w1.counts("alice") == (3, 2)
    # the other worker's relayed address is known; a release frees slot and address everywhere
    assert w1.holds_relay(("10.0.0.1", 50000))
    w0.release("a1")
    assert not w1.holds_relay(("10.0.0.1", 50000))
    assert w1.claim("b2", "bob", [], max_total=3, max_user=2) is None


def test_a_reservation_is_taken_once_and_not_after_expiry(
    workers: tuple[SharedLedger, SharedLedger],
) -> None:
    w0, w1 = workers
    w0.reserve(b"t" * 8, ("10.0.0.1", 50001), FAMILY_IPV4, expires=100.0)
    w0.reserve(b"u" * 8, ("10.0.0.1", 50003), FAMILY_IPV4, expires=50.0)
    assert w0.reservations_held() == {b"t" * 8, b"u" * 8}
    assert w1.take_reservation(b"t" * 8, now=60.0) == (0, ("10.0.0.1", 50001), FAMILY_IPV4)
    assert w0.take_reservation(b"t" * 8, now=60.0) is None  # once only
    assert w1.take_reservation(b"u" * 8, now=60.0) is None  # expired
    assert w0.reservations_held() == set()


def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    SharedLedger.create(path)
    for index, active in ((0, 3), (1, 4)):
        counters = TurnCounters()
        counters.allocations_active = active
        counters.errors[403] = index + 1
        SharedLedger(path, index).publish(counters)
    total = summed_counters(path)
    assert total.allocations_active == 7
    assert total.errors == {403: 3}


def test_a_reserved_port_another_worker_relays_on_is_not_shared(
    workers: tuple[SharedLedger, SharedLedger],
) -> None:
    """SO_REUSEPORT lets a worker bind the odd port another worker took over from an earlier
    reservation; the allocator must not, or the two would split that port's datagrams."""
    w0, w1 = workers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] & ~1
    allocator = RelayAllocator("127.0.0.1", None, base, base + 1, shared=w0)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        taken.bind(("127.0.0.1", base + 1))
        assert w1.claim("x", "bob", [("127.0.0.1", base + 1)], max_total=0, max_user=0) is None
        allocation = cast(Allocation, object())
        with pytest.raises(InsufficientCapacity):
            allocator.allocate(FAMILY_IPV4, allocation, even=True, reserve=True)
        w1.release("x")
        relay, token = allocator.allocate(FAMILY_IPV4, allocation, even=True, reserve=True)
        assert relay.address == ("127.0.0.1", base) and token is not None
        relay.close()
    finally:
        taken.close()
        allocator.close()
