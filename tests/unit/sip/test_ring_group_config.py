"""Ring groups in the store: whom a group's DID rings (enabled members, exactly that group),
and the start-up check that refuses a DID naming a group that does not exist."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callgate.accounts.service import AccountService
from callgate.errors import ConfigError
from callgate.policy.groups import GroupStore
from callgate.policy.specs import GroupSpec
from callgate.runtime.sip import check_ring_groups
from callgate.sip.trunks import Trunk, Trunks
from callgate.storage.db import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    accounts = AccountService(opened, "callgate")
    accounts.create_user("alice", groups=["desk"])
    accounts.create_user("bob", groups=["legal", "desk"])
    accounts.create_user("carol", groups=["desk_2"])  # "_" is a LIKE wildcard: not a member
    accounts.create_user("dave", groups=["desk"])
    accounts.disable("dave")
    accounts.create_user("erin", groups=["old"])  # a group with no row, from before rows
    yield opened
    opened.close()


def test_members_are_the_enabled_accounts_in_exactly_that_group(store: Store) -> None:
    groups = GroupStore(store)
    assert groups.members_of("desk") == ("alice", "bob")
    assert groups.members_of("desk_2") == ("carol",)
    assert groups.members_of("nobody") == ()


def test_a_did_naming_an_unknown_group_stops_the_start(store: Store) -> None:
    groups = GroupStore(store)
    groups.create("root", GroupSpec("desk"))
    trunk = Trunk("carrier", frozenset({"192.0.2.7"}),
                  did_groups={"+15551230002": "desk", "+15551230003": "old"})  # fmt: skip
    check_ring_groups(Trunks([trunk]), groups)  # a row, and a group only accounts name
    typo = Trunk("carrier", frozenset({"192.0.2.7"}), did_groups={"+15551230004": "dsk"})
    with pytest.raises(ConfigError) as raised:
        check_ring_groups(Trunks([typo]), groups)
    assert str(raised.value) == (
        "sip.trunks 'carrier': DID +15551230004 rings group 'dsk', which does not exist "
        "(callgate group create dsk; add-member …)"
    )


def test_a_did_naming_a_group_over_the_size_limit_stops_the_start(store: Store) -> None:
    groups = GroupStore(store)
    trunk = Trunk("carrier", frozenset({"192.0.2.7"}), did_groups={"+15551230002": "desk"})
    check_ring_groups(Trunks([trunk]), groups, max_members=2)  # alice and bob: within it
    with pytest.raises(ConfigError) as raised:
        check_ring_groups(Trunks([trunk]), groups, max_members=1)
    assert str(raised.value) == (
        "sip.trunks 'carrier': DID +15551230002 rings group 'desk', which has 2 members, "
        "over sip.ring_group_max_members (1)"
    )
