"""Call-bound relaying: an allocation reaches only the relayed address of its user's partner in a
live call; nothing else, not an outside peer, not another user's relay, not after the call."""

from __future__ import annotations

import logging

import pytest

from callgate.stun import attributes as attrs
from callgate.stun.constants import Attr, Method
from callgate.turn.callbound import withdraw_stale
from tests.unit.turn.test_turn_handlers import (
    PEER,
    FakeClient,
    Server,
    error_code,
    xor_attr,
    xor_peer,
)

ALICE = FakeClient(("198.51.100.1", 40000))
BOB = FakeClient(("198.51.100.2", 40000))


class Calls:
    """Stands in for the signaling engine's `together`: which user pairs are in a live call."""

    def __init__(self) -> None:
        self.live: set[frozenset[str]] = set()

    def together(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.live


def two_allocations() -> tuple[Server, Calls, tuple[str, int], tuple[str, int]]:
    server = Server(call_bound=True)
    calls = Calls()
    server.handler.call_guard = calls.together
    alice_relay = xor_attr(server.allocate(client=ALICE), Attr.XOR_RELAYED_ADDRESS)
    bob_relay = xor_attr(server.allocate(client=BOB, user="bob"), Attr.XOR_RELAYED_ADDRESS)
    return server, calls, alice_relay, bob_relay


def permit(server: Server, peer: tuple[str, int], client: FakeClient, user: str) -> int | None:
    response = server.request(Method.CREATE_PERMISSION, [xor_peer(peer)], client=client, user=user)
    return error_code(response)


def bind(
    server: Server, number: int, peer: tuple[str, int], client: FakeClient, user: str
) -> int | None:
    response = server.request(
        Method.CHANNEL_BIND,
        [(Attr.CHANNEL_NUMBER, attrs.pack_channel_number(number)), xor_peer(peer)],
        client=client,
        user=user,
    )
    return error_code(response)


def test_partners_in_a_live_call_reach_each_others_relay() -> None:
    server, calls, alice_relay, bob_relay = two_allocations()
    calls.live.add(frozenset(("alice", "bob")))
    assert permit(server, bob_relay, ALICE, "alice") is None
    assert bind(server, 0x4000, alice_relay, BOB, "bob") is None
    assert server.allocation(ALICE).call_peers == {bob_relay}


def test_no_live_call_means_403_and_a_count() -> None:
    server, _calls, _alice_relay, bob_relay = two_allocations()
    response = server.request(
        Method.CREATE_PERMISSION, [xor_peer(bob_relay)], client=ALICE, user="alice"
    )
    assert error_code(response) == 403
    value = response.get(Attr.ERROR_CODE)
    assert value is not None
    assert "call" in attrs.unpack_error_code(value)[1]
    assert server.counters.peers_refused == 1


def test_refusals_are_logged_with_their_reason_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, calls, _alice_relay, bob_relay = two_allocations()
    caplog.set_level(logging.INFO, logger="callgate.turn.handlers")
    assert permit(server, bob_relay, ALICE, "alice") == 403
    assert permit(server, bob_relay, ALICE, "alice") == 403  # same second: counted, not logged
    server.clock.advance(1.0)
    calls.live.add(frozenset(("alice", "bob")))
    assert permit(server, PEER, ALICE, "alice") == 403
    lines = [r.getMessage() for r in caplog.records if "call-bound relay refused" in r.message]
    assert lines == [
        f"call-bound relay refused alice's peer {bob_relay[0]}:{bob_relay[1]} "
        "(no live call between alice and bob)",
        f"call-bound relay refused alice's peer {PEER[0]}:{PEER[1]} (peer is not on this relay)",
    ]
    assert server.counters.peers_refused == 3


def test_outside_peer_is_refused_even_during_a_call() -> None:
    server, calls, _alice_relay, _bob_relay = two_allocations()
    calls.live.add(frozenset(("alice", "bob")))
    # PEER is a public address the plain peer filter would allow: call-bound mode still refuses.
    assert permit(server, PEER, ALICE, "alice") == 403
    assert bind(server, 0x4001, PEER, ALICE, "alice") == 403


def test_send_indication_to_another_port_on_the_relay_ip_is_dropped() -> None:
    server, calls, _alice_relay, bob_relay = two_allocations()
    calls.live.add(frozenset(("alice", "bob")))
    assert permit(server, bob_relay, ALICE, "alice") is None
    before = server.counters.peers_refused
    # The permission is per IP (RFC 8656 §9) and every allocation shares the relay IP: a port
    # nobody admitted must still be unreachable.
    server.send_indication((bob_relay[0], bob_relay[1] + 100), b"probe", ALICE)
    assert server.counters.peers_refused == before + 1
    server.send_indication(bob_relay, b"hello", ALICE)
    assert server.counters.peers_refused == before + 1


def test_without_an_engine_attached_everything_is_refused() -> None:
    server = Server(call_bound=True)
    server.allocate(client=ALICE)
    relay = xor_attr(server.allocate(client=BOB, user="bob"), Attr.XOR_RELAYED_ADDRESS)
    assert permit(server, relay, ALICE, "alice") == 403


def test_when_the_call_ends_the_sweep_withdraws_permission_and_channel() -> None:
    server, calls, _alice_relay, bob_relay = two_allocations()
    calls.live.add(frozenset(("alice", "bob")))
    assert bind(server, 0x4000, bob_relay, ALICE, "alice") is None
    alice = server.allocation(ALICE)
    assert bob_relay[0] in alice.permissions and alice.channels
    assert withdraw_stale(calls.together, server.manager.by_relay, list(server.manager)) == 0

    calls.live.clear()
    assert withdraw_stale(calls.together, server.manager.by_relay, list(server.manager)) == 1
    assert not alice.channels
    assert bob_relay[0] not in alice.permissions
    assert alice.call_peers == set()
    # And a new request is refused again.
    assert permit(server, bob_relay, ALICE, "alice") == 403
