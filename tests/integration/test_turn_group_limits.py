"""Per-group TURN settings applied by a real relay on loopback: a group's allocation limit and
bandwidth cap tighten the server-wide ones for its members, its peer ranges open peers the server
refuses to everyone else, and a group change reaches the relay at the next refresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.accounts.service import AccountService
from callgate.policy.groups import GroupStore
from callgate.policy.specs import GroupSpec
from callgate.policy.turn_limits import GroupTurnLimits
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.stun.constants import MessageClass
from callgate.types import Transport
from tests.integration.turn_client import (
    USER,
    drain,
    error_code,
    reason_of,
    run_server,
    udp_client,
    udp_peer,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(sqlite_url(tmp_path / "data"))
    AccountService(opened, "callgate").create_user(USER, groups=["contractors"])
    yield opened
    opened.close()


def limits_for(store: Store, **settings: object) -> GroupTurnLimits:
    GroupStore(store).create("admin", GroupSpec.parse({"name": "contractors", **settings}))
    limits = GroupTurnLimits(store)
    assert limits.load() == 1
    return limits


async def test_group_allocation_limit_is_tighter_than_the_server_wide_one(store: Store) -> None:
    limits = limits_for(store, turn_max_allocations=1)
    async with run_server(max_allocations_per_user=10) as server:
        server.handler.user_limits = limits
        address = server.address(Transport.UDP)
        async with udp_client(address) as first, udp_client(address) as second:
            await first.allocated()
            refused = await second.allocate()
            assert error_code(refused) == 486
            assert reason_of(refused) == "Allocation Quota Reached: 1 for your group"
            # The admin raises the limit: the relay sees it at its next refresh.
            GroupStore(store).update("admin", "contractors", {"turn_max_allocations": 2})
            limits.load()
            assert (await second.allocate()).cls is MessageClass.SUCCESS


async def test_group_bandwidth_cap_drops_most_of_a_burst(store: Store) -> None:
    limits = limits_for(store, turn_max_kbps=16)  # 2000 bytes/s
    async with run_server() as server, udp_peer(echo=False) as peer:
        server.handler.user_limits = limits
        async with udp_client(server.address(Transport.UDP)) as client:
            await client.allocated()
            assert (await client.channel_bind(0x4004, peer.address)).cls is MessageClass.SUCCESS
            for i in range(50):
                client.send_channel_data(0x4004, i.to_bytes(2, "big") * 250)  # 500 bytes each
            received = await drain(peer.received)
    # 2000 B/s with one second of burst: about 4 of the 50 packets pass (no server-wide cap).
    assert 1 <= len(received) <= 10, len(received)


async def test_group_peer_ranges_open_peers_for_members_only(store: Store) -> None:
    limits = limits_for(store, turn_max_allocations=5)
    async with run_server(allow_peers=()) as server, udp_peer("127.0.0.1") as peer:
        server.handler.user_limits = limits
        async with udp_client(server.address(Transport.UDP)) as client:
            await client.allocated()
            assert error_code(await client.create_permission(peer.address)) == 403
            GroupStore(store).update("admin", "contractors", {"turn_peer_ranges": ["127.0.0.0/8"]})
            limits.load()
            assert (await client.create_permission(peer.address)).cls is MessageClass.SUCCESS
