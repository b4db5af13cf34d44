"""Policy enforced by the signaling hub before anyone rings: a denied call never rings and leaves
a CDR naming the rule; an allowed call records its rule; max_duration_s ends the call
`max-duration`; relay_only strips direct candidates for one call although the server allows them;
an ethical wall holds in both directions; a change made through another store is seen at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from callgate.accounts.service import AccountService
from callgate.policy.groups import GroupStore
from callgate.policy.specs import GroupSpec, RuleSpec
from callgate.policy.store import PolicyStore
from callgate.signaling.hub import Device, SignalingHub
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.types.decisions import Denial, Grant
from tests.integration.hub_helpers import next_of, parse, running_hub

RELAY_IP = "203.0.113.10"
HOST = "a=candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host\r\n"
SRFLX = "a=candidate:2 1 udp 1686052607 198.51.100.44 50001 typ srflx raddr 192.168.1.20\r\n"
RELAY = f"a=candidate:3 1 udp 41885439 {RELAY_IP} 61000 typ relay raddr 198.51.100.44\r\n"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 192.168.1.20\r\n" + HOST + SRFLX + RELAY
)
USERS = {"alice": ["sales"], "bob": ["legal"], "carol": ["sales"], "dave": []}
POLICY_DOWN = ("unavailable", "the call policy is unavailable")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url(tmp_path / "data"))
    accounts = AccountService(opened, "callgate")
    for handle, groups in USERS.items():
        accounts.create_user(handle, groups=groups)
    groups = GroupStore(opened)
    for name in ("sales", "legal"):
        groups.create("admin", GroupSpec(name))
    yield opened
    opened.close()


@pytest.fixture
def policy(store: Store) -> PolicyStore:
    return PolicyStore(store)


@pytest.fixture
async def hub(store: Store, policy: PolicyStore) -> AsyncIterator[SignalingHub]:
    timeouts = {"ring_timeout": 5, "setup_timeout": 10, "silence_timeout": 10}
    async with running_hub(store, policy, relay_addresses=[RELAY_IP], **timeouts) as hub:
        yield hub


def queued(device: Device) -> list[str]:
    kinds = []
    while not device.queue.empty():
        message = device.queue.get_nowait()
        kinds.append(message["type"] if message is not None else "closed")
    return kinds


async def invite(hub: SignalingHub, caller: Device, to: str) -> None:
    message = parse({"type": "call.invite", "id": "1", "to": to, "sdp": SDP})
    await hub.receive(caller, message, lambda handle: handle in USERS)


async def connect(hub: SignalingHub, handle: str) -> Device:
    # The server-wide ICE policy is "all" here: relay-only comes from the rule alone.
    device, _ = await hub.connect(handle, handle.title(), False)
    return device


async def test_a_denied_call_never_rings_and_names_its_rule(
    hub: SignalingHub, policy: PolicyStore
) -> None:
    rule = policy.create_rule(
        "admin", RuleSpec("no-dave", "deny", callee_user="dave", reason="dave takes no calls")
    )
    alice, dave = await connect(hub, "alice"), await connect(hub, "dave")
    await invite(hub, alice, "dave")

    denied = await next_of(alice, "call.denied")
    assert denied["reason"] == "dave takes no calls"
    assert denied["rule"] == f"{rule.id}:no-dave"
    ended = await next_of(alice, "call.ended")
    assert ended["reason"] == "policy-denied"
    await hub.flush()
    assert "call.incoming" not in queued(dave)
    row = hub.cdrs.get(denied["call_id"])
    assert row is not None
    assert (row.disposition, row.policy_rule, row.policy_decision) == (
        "denied",
        f"{rule.id}:no-dave",
        "deny",
    )
    assert row.ring_at is None


async def test_default_deny_names_the_default(hub: SignalingHub, policy: PolicyStore) -> None:
    policy.set_settings("admin", default_action="deny")
    alice, _bob = await connect(hub, "alice"), await connect(hub, "bob")
    await invite(hub, alice, "bob")
    denied = await next_of(alice, "call.denied")
    assert (denied["rule"], denied["reason"]) == ("default", "denied by default policy")


async def test_a_call_that_must_be_recorded_never_rings_without_a_recorder(
    hub: SignalingHub, policy: PolicyStore
) -> None:
    rule = policy.create_rule(
        "admin", RuleSpec("record-sales", "allow", caller_group="sales", recording_required=True)
    )
    alice, bob = await connect(hub, "alice"), await connect(hub, "bob")
    await invite(hub, alice, "bob")
    ended = await next_of(alice, "call.ended")
    assert (ended["reason"], ended["ended_by"]) == ("recording-unavailable", "server")
    assert bob.queue.empty()  # bob was never rung
    await hub.flush()
    row = hub.cdrs.get(ended["call_id"])
    assert row is not None
    assert (row.policy_rule, row.policy_decision, row.recording_required) == (
        f"{rule.id}:record-sales",
        "allow",
        True,
    )
    assert (row.disposition, row.reason, row.ring_at) == ("failed", "recording-unavailable", None)
    # No rule for dave's calls: the default action, named "default".
    dave = await connect(hub, "dave")
    await invite(hub, dave, "carol")
    await hub.flush()
    carol_calls = hub.cdrs.list(user="dave")
    assert [(c.policy_rule, c.policy_decision) for c in carol_calls] == [("default", "allow")]


async def test_max_duration_ends_an_answered_call(hub: SignalingHub, policy: PolicyStore) -> None:
    policy.create_rule("admin", RuleSpec("short", "allow", caller_user="alice", max_duration_s=1))
    alice, bob = await connect(hub, "alice"), await connect(hub, "bob")
    await invite(hub, alice, "bob")
    call_id = (await next_of(bob, "call.incoming"))["call_id"]
    answer = {"type": "call.answer", "id": "2", "call_id": call_id, "sdp": SDP}
    await hub.receive(bob, parse(answer), bool)
    ended = await next_of(alice, "call.ended", timeout=20)
    assert (ended["reason"], ended["ended_by"]) == ("max-duration", "server")
    assert (await next_of(bob, "call.ended"))["reason"] == "max-duration"
    await hub.flush()
    row = hub.cdrs.get(call_id)
    assert row is not None and (row.disposition, row.reason) == ("answered", "max-duration")
    # not cut short; how late the timer fires past 1 s depends on the machine's load
    assert row.duration_s is not None and row.duration_s >= 0.99


async def test_relay_only_rule_strips_direct_candidates_of_one_call(
    hub: SignalingHub, policy: PolicyStore
) -> None:
    policy.create_rule(
        "admin", RuleSpec("relay-legal", "allow", callee_group="legal", relay_only=True)
    )
    alice, bob, carol, dave = [
        await connect(hub, name) for name in ("alice", "bob", "carol", "dave")
    ]
    await invite(hub, alice, "bob")
    # Both clients hear that this one call is relay-only (the callee gathers relay-only then).
    assert (await next_of(alice, "ack"))["ice_transport_policy"] == "relay"
    incoming = await next_of(bob, "call.incoming")
    assert incoming["ice_transport_policy"] == "relay"
    offer = incoming["sdp"]
    assert RELAY.replace("raddr 198.51.100.44", "raddr 0.0.0.0").strip() in offer
    assert "typ host" not in offer and "typ srflx" not in offer
    assert "198.51.100.44" not in offer and "192.168.1.20" not in offer
    call_id = hub.engine.call_of(alice.device_id)

    async def trickle(request_id: str, candidate: str) -> bool:
        message = {
            "type": "call.candidate",
            "id": request_id,
            "call_id": call_id,
            "candidate": {"candidate": candidate, "sdpMid": "0"},
        }
        await hub.receive(alice, parse(message), bool)
        ack = await next_of(alice, "ack")
        while ack["id"] != request_id:
            ack = await next_of(alice, "ack")
        return bool(ack["forwarded"])

    assert await trickle("3", HOST[2:].strip()) is False
    assert await trickle("4", RELAY[2:].strip().replace(" ", "\t")) is False
    assert "call.candidate" not in queued(bob)
    assert await trickle("5", RELAY[2:].strip()) is True
    forwarded = await next_of(bob, "call.candidate")
    assert forwarded["candidate"]["candidate"].endswith(" typ relay raddr 0.0.0.0")
    # The same server, another call that no rule restricts: the host candidate gets through.
    await invite(hub, carol, "dave")
    other = await next_of(dave, "call.incoming")
    assert "typ host" in other["sdp"] and other["ice_transport_policy"] == "all"


@pytest.mark.parametrize(("caller", "callee"), [("alice", "bob"), ("bob", "alice")])
async def test_an_ethical_wall_holds_both_ways(
    hub: SignalingHub, policy: PolicyStore, caller: str, callee: str
) -> None:
    policy.create_rule(
        "admin",
        RuleSpec(
            "wall",
            "deny",
            caller_group="sales",
            callee_group="legal",
            wall=True,
            reason="ethical wall",
        ),
    )
    a, b = await connect(hub, caller), await connect(hub, callee)
    await invite(hub, a, callee)
    denied = await next_of(a, "call.denied")
    assert denied["reason"] == "ethical wall"
    await hub.flush()
    assert "call.incoming" not in queued(b)


async def test_another_process_change_is_seen_within_a_second(
    hub: SignalingHub, store: Store
) -> None:
    alice, bob = await connect(hub, "alice"), await connect(hub, "bob")
    await invite(hub, alice, "bob")
    await next_of(bob, "call.incoming")
    await hub.receive(
        alice,
        parse({"type": "call.hangup", "id": "9", "call_id": hub.engine.call_of(alice.device_id)}),
        bool,
    )
    # Another process (its own PolicyStore on the same database) adds a deny rule.
    PolicyStore(store).create_rule("other", RuleSpec("block", "deny", caller_user="alice"))
    await asyncio.sleep(0.6)
    await invite(hub, alice, "bob")
    denied = await next_of(alice, "call.denied")
    assert denied["rule"].endswith(":block")


async def test_an_unreadable_policy_fails_closed(hub: SignalingHub, store: Store) -> None:
    alice, bob = await connect(hub, "alice"), await connect(hub, "bob")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE policy_settings RENAME TO policy_settings_gone")
    await invite(hub, alice, "bob")
    denied = await next_of(alice, "call.denied")
    assert (denied["rule"], denied["reason"]) == ("unavailable", "the call policy is unavailable")
    await hub.flush()
    assert "call.incoming" not in queued(bob)


async def test_a_ring_group_rings_the_members_the_policy_allows_and_records_who_answered(
    hub: SignalingHub, policy: PolicyStore, store: Store
) -> None:
    """A trunk DID's ring group "sales" (alice, carol): a rule keeps carol's phone quiet, alice
    rings and answers; the CDR's callee is `group:sales` while it rings, then alice. A group
    whose members cannot be read rings nobody, and the record says so."""
    rule = policy.create_rule("admin", RuleSpec("quiet-carol", "deny", callee_user="carol"))
    caller, _ = await hub.connect("+15550001111", "+15550001111 (carrier)", False)
    alice, carol = await connect(hub, "alice"), await connect(hub, "carol")
    members = GroupStore(store).members_of
    await hub.invite_group(caller, "1", "sales", SDP, members)
    incoming = await next_of(alice, "call.incoming")
    assert incoming["from"]["handle"] == "+15550001111"
    await hub.flush()
    assert "call.incoming" not in queued(carol)
    ringing = hub.cdrs.get(incoming["call_id"])
    assert ringing is not None and ringing.callee_user == "group:sales"
    answer = {"type": "call.answer", "id": "2", "call_id": incoming["call_id"], "sdp": SDP}
    await hub.receive(alice, parse(answer), lambda handle: handle in USERS)
    await next_of(caller, "call.answered")
    await hub.flush()
    row = hub.cdrs.get(incoming["call_id"])
    assert row is not None and (row.callee_user, row.policy_rule) == ("alice", "default")
    assert row.callee_device == alice.device_id
    hangup = {"type": "call.hangup", "id": "3", "call_id": incoming["call_id"]}
    await hub.receive(caller, parse(hangup), lambda handle: handle in USERS)
    await next_of(alice, "call.ended")

    # only carol left to ring, and the rule denies her: the carrier is refused, naming it
    await hub.invite_group(caller, "4", "sales", SDP, lambda group: ("carol",))
    denied = await next_of(caller, "call.denied")
    assert denied["rule"] == f"{rule.id}:quiet-carol"

    def unreadable(group: str) -> tuple[str, ...]:
        raise RuntimeError("database away")

    await hub.invite_group(caller, "5", "sales", SDP, unreadable)
    denied = await next_of(caller, "call.denied")
    assert denied["rule"] == "unavailable"
    await hub.flush()
    row = hub.cdrs.get(denied["call_id"])
    assert row is not None and (row.callee_user, row.disposition) == ("group:sales", "denied")
    assert "call.incoming" not in queued(alice) + queued(carol)


async def test_a_ring_group_over_the_limit_is_refused_and_an_answer_records_its_members_rule(
    hub: SignalingHub, policy: PolicyStore, store: Store
) -> None:
    """Group "sales" (alice, carol): with at most one member allowed, the carrier's call is
    refused before anyone is looked up — the record names the limit. Within the limit, alice is
    allowed by the default and carol by her own rule: carol answers, and the record names
    carol's rule, not the first member's."""
    caller, _ = await hub.connect("+15550001111", "+15550001111 (carrier)", False)
    alice, carol = await connect(hub, "alice"), await connect(hub, "carol")
    members = GroupStore(store).members_of
    await hub.invite_group(caller, "1", "sales", SDP, members, max_members=1)
    denied = await next_of(caller, "call.denied")
    assert denied["rule"] == "ring-group-size"
    assert denied["reason"] == (
        "ring group 'sales' has 2 members, over the limit of 1 (sip.ring_group_max_members)"
    )
    await hub.flush()
    row = hub.cdrs.get(denied["call_id"])
    assert row is not None and (row.callee_user, row.disposition) == ("group:sales", "denied")
    assert (row.policy_rule, row.reason) == ("ring-group-size", "policy-denied")
    assert "call.incoming" not in queued(alice) + queued(carol)

    rule = policy.create_rule("admin", RuleSpec("carol-direct", "allow", callee_user="carol"))
    await hub.invite_group(caller, "2", "sales", SDP, members, max_members=2)
    incoming = await next_of(carol, "call.incoming")
    await next_of(alice, "call.incoming")
    await hub.flush()
    ringing = hub.cdrs.get(incoming["call_id"])
    assert ringing is not None and ringing.policy_rule == "default"  # alice's, the first
    answer = {"type": "call.answer", "id": "3", "call_id": incoming["call_id"], "sdp": SDP}
    await hub.receive(carol, parse(answer), lambda handle: handle in USERS)
    await next_of(caller, "call.answered")
    await hub.flush()
    row = hub.cdrs.get(incoming["call_id"])
    assert row is not None and (row.callee_user, row.policy_rule) == (
        "carol",
        f"{rule.id}:carol-direct",
    )


class _CountedPolicy(PolicyStore):
    """The store's policy, noting how many invites each batched decision judged."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[int] = []

    def verdict_pairs(
        self, pairs: Sequence[tuple[str, str]], at: datetime
    ) -> list[tuple[Denial | None, Grant | None]]:
        self.batches.append(len(pairs))
        return super().verdict_pairs(pairs, at)


async def test_invites_arriving_together_are_decided_together_each_as_alone(
    store: Store,
) -> None:
    """signaling/lookups.py: while one invite's lookup is on the worker thread, the next ones
    wait and go together, their parties read in one query; each gets its own verdict, and an
    unreadable policy denies every one of them."""
    policy = _CountedPolicy(store)
    wall = RuleSpec("wall", "deny", caller_group="sales", callee_group="legal", wall=True)
    policy.create_rule("admin", wall)
    async with running_hub(store, policy, relay_addresses=[RELAY_IP]) as hub:
        alice, bob, carol, dave = [await connect(hub, h) for h in ("alice", "bob", "carol", "dave")]
        # the first (to nobody) goes alone; the other two wait for its trip and share the next
        await asyncio.gather(invite(hub, bob, "nobody"), invite(hub, alice, "bob"),
                             invite(hub, carol, "dave"))  # fmt: skip
        assert policy.batches == [2]
        assert (await next_of(alice, "call.denied"))["rule"].endswith(":wall")
        assert (await next_of(carol, "call.ringing"))["devices"] == 1
        assert (await next_of(dave, "call.incoming"))["from"]["handle"] == "carol"
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE policy_settings RENAME TO policy_settings_gone")
        policy.invalidate()  # read the policy again at the next decision
        for device in (alice, bob, carol, dave):
            await hub.disconnect(device)
        alice, bob, carol, dave = [await connect(hub, h) for h in ("alice", "bob", "carol", "dave")]
        await asyncio.gather(invite(hub, dave, "nobody"), invite(hub, alice, "dave"),
                             invite(hub, bob, "carol"))  # fmt: skip
        assert policy.batches == [2, 2]
        for caller in (alice, bob):
            denied = await next_of(caller, "call.denied")
            assert (denied["rule"], denied["reason"]) == POLICY_DOWN
        await hub.flush()
        assert "call.incoming" not in queued(carol) + queued(dave)


async def test_one_unreadable_account_in_a_shared_trip_denies_only_its_own_call(
    store: Store,
) -> None:
    """An account whose groups are corrupt fails the trip's one read; each invite is then
    decided alone, so only the call touching that account is denied (unavailable) and the
    unrelated call in the same trip still rings."""
    policy = _CountedPolicy(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE users SET groups = '{not json' WHERE handle = 'bob'")
    async with running_hub(store, policy, relay_addresses=[RELAY_IP]) as hub:
        alice, bob, carol, dave = [await connect(hub, h) for h in ("alice", "bob", "carol", "dave")]
        await asyncio.gather(invite(hub, dave, "nobody"), invite(hub, alice, "bob"),
                             invite(hub, carol, "dave"))  # fmt: skip
        assert policy.batches == [2]  # the two shared a trip, whose one read failed
        denied = await next_of(alice, "call.denied")
        assert (denied["rule"], denied["reason"]) == POLICY_DOWN
        assert (await next_of(dave, "call.incoming"))["from"]["handle"] == "carol"
        await hub.flush()
        assert "call.incoming" not in queued(bob)


class _HungPolicy(PolicyStore):
    """The store's policy, whose read for alice's calls hangs until `release` is set."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.release = threading.Event()

    def verdict(self, caller: str, callee: str, at: datetime) -> tuple[Denial | None, Grant | None]:
        if caller == "alice":
            self.release.wait(30)  # then answers (allow), however late
        return super().verdict(caller, callee, at)


async def test_a_hung_policy_read_denies_the_invite_and_its_late_answer_is_dropped(
    store: Store,
) -> None:
    """signaling/lookups.py LOOKUP_TIMEOUT: an invite whose read hangs on the worker thread is
    denied "unavailable" once the bound passes (nobody rings); the read's late answer (allow)
    is discarded, and the next invite is decided as usual."""
    policy = _HungPolicy(store)
    async with running_hub(store, policy, relay_addresses=[RELAY_IP]) as hub:
        hub.lookup_timeout = 0.2  # the bound, short for the test; the read hangs far longer
        try:
            alice, bob, carol, dave = [
                await connect(hub, h) for h in ("alice", "bob", "carol", "dave")
            ]
            await invite(hub, alice, "bob")
            denied = await next_of(alice, "call.denied")
            assert (denied["rule"], denied["reason"]) == POLICY_DOWN
        finally:
            policy.release.set()
        hub.lookup_timeout = 30  # generous again: the next invite must not race the bound
        await invite(hub, carol, "dave")  # goes once the hung trip is back
        assert (await next_of(dave, "call.incoming"))["from"]["handle"] == "carol"
        await hub.flush()
        assert "call.incoming" not in queued(bob)
        assert "call.ringing" not in queued(alice)
