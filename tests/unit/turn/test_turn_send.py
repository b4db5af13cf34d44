"""The one Send indication rule (turn/send.py) that the UDP fast reader and TurnHandler share:
relayed to a permitted peer, a malformed one counted, nothing without an allocation, and in
call-bound mode nothing to a peer the call did not admit (counted)."""

from __future__ import annotations

from callgate.stun import attributes as attrs
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import build, encode, new_transaction_id
from callgate.turn.send import relay_send_indication
from callgate.types import Address
from tests.unit.turn.test_turn_callbound import ALICE, two_allocations
from tests.unit.turn.test_turn_handlers import PEER, Server, success


def send_indication(peer: Address, data: bytes) -> bytes:
    tid = new_transaction_id()
    attributes = [(Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(peer, tid)), (Attr.DATA, data)]
    return encode(build(Method.SEND, MessageClass.INDICATION, tid, attributes))


def test_a_send_indication_reaches_a_permitted_peer_and_nothing_else() -> None:
    server = Server()
    success(server.allocate())
    success(server.permit(PEER))
    allocation, counters = server.allocation(), server.counters
    # as the UDP reader hands it over: a view of its receive buffer
    relay_send_indication(memoryview(send_indication(PEER, b"hello")), allocation, False, counters)
    assert server.relay().sent == [(b"hello", PEER)]
    relay_send_indication(
        send_indication(("203.0.113.9", 5000), b"no"), allocation, False, counters
    )
    assert server.relay().sent == [(b"hello", PEER)]  # no permission for that IP
    relay_send_indication(send_indication(PEER, b"nobody's"), None, False, counters)
    assert server.relay().sent == [(b"hello", PEER)]
    assert (counters.malformed_dropped, counters.peers_refused) == (0, 0)


def test_a_malformed_send_indication_is_counted_even_without_an_allocation() -> None:
    server = Server()
    packet = send_indication(PEER, b"hello")
    relay_send_indication(packet[:-3], None, False, server.counters)  # the length no longer fits
    assert server.counters.malformed_dropped == 1


def test_call_bound_sends_only_to_the_admitted_peer_and_counts_the_rest() -> None:
    server, calls, _alice_relay, bob_relay = two_allocations()
    calls.live.add(frozenset(("alice", "bob")))
    success(server.permit(bob_relay, client=ALICE))
    alice = server.allocation(ALICE)
    # the permission covers the relay IP; only bob's admitted port may be reached
    elsewhere = (bob_relay[0], bob_relay[1] + 100)
    relay_send_indication(send_indication(elsewhere, b"probe"), alice, True, server.counters)
    assert server.counters.peers_refused == 1
    relay_send_indication(send_indication(bob_relay, b"hi bob"), alice, True, server.counters)
    assert server.counters.peers_refused == 1
    # bob's relay is on this server: handed over inside it, counted as alice's data to her peer
    assert (alice.packets_to_peer, alice.bytes_to_peer) == (1, len(b"hi bob"))
