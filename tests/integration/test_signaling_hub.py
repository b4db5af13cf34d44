"""The hub carries out the engine's effects in order: the CDR row exists before anyone rings,
records follow the call, and the media watchdog ends a silent call on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callgate.records.audit import AuditLog
from callgate.signaling.hub import SignalingHub
from callgate.storage.db import Store, open_store
from tests.integration.hub_helpers import next_of, parse, running_hub

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
async def hub(store: Store) -> AsyncIterator[SignalingHub]:
    async with running_hub(store, ring_timeout=5, setup_timeout=0.5, silence_timeout=0.5) as hub:
        yield hub


async def test_cdr_is_durable_before_the_callee_rings(hub: SignalingHub) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    invite = parse({"type": "call.invite", "id": "1", "to": "bob", "sdp": SDP})
    await hub.receive(alice, invite, lambda handle: handle == "bob")

    incoming = await next_of(bob, "call.incoming")
    # The row was committed by the writer thread before call.incoming was queued.
    row = hub.cdrs.get(incoming["call_id"])
    assert row is not None and row.callee_user == "bob" and row.ring_at is not None
    assert row.end_at is None


async def test_an_answered_call_without_media_is_ended_by_the_watchdog(hub: SignalingHub) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    await hub.receive(
        alice, parse({"type": "call.invite", "id": "1", "to": "bob", "sdp": SDP}), bool
    )
    call_id = (await next_of(bob, "call.incoming"))["call_id"]
    await hub.receive(
        bob, parse({"type": "call.answer", "id": "2", "call_id": call_id, "sdp": SDP}), bool
    )
    ended = await next_of(alice, "call.ended")
    assert ended["reason"] == "setup-failed"
    await hub.flush()
    row = hub.cdrs.get(call_id)
    assert row is not None
    assert (row.disposition, row.reason, row.ended_by) == ("failed", "setup-failed", "server")
    assert (
        row.answer_at is not None and row.end_at is not None and row.callee_device == bob.device_id
    )
    assert row.duration_s is not None
    assert abs(row.duration_s - (row.end_at - row.answer_at).total_seconds()) < 0.05


async def test_unknown_callee_leaves_a_failed_record(hub: SignalingHub) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    await hub.receive(
        alice,
        parse({"type": "call.invite", "id": "1", "to": "nobody", "sdp": SDP}),
        lambda handle: False,
    )
    ended = await next_of(alice, "call.ended")
    assert ended["reason"] == "unknown-user"
    await hub.flush()
    row = hub.cdrs.get(ended["call_id"])
    assert row is not None and (row.disposition, row.reason) == ("failed", "unknown-user")
    assert row.duration_s is None  # never answered


async def test_no_record_no_ringing(hub: SignalingHub, store: Store) -> None:
    """Fail closed: when the CDR cannot be written, the callee is not rung and the caller is told."""
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE call_quality")
        conn.exec_driver_sql("ALTER TABLE calls RENAME TO calls_gone")
    invite = parse({"type": "call.invite", "id": "7", "to": "bob", "sdp": SDP})
    await hub.receive(alice, invite, lambda handle: True)

    error = await next_of(alice, "error")
    assert (error["id"], error["code"]) == ("7", "server-error")
    assert bob.queue.empty()
    assert hub.engine.call_of(alice.device_id) is None  # the caller can try again


async def test_what_a_party_hears_is_already_recorded(hub: SignalingHub, store: Store) -> None:
    """call.answered and call.ended reach the parties only once the CDR change and its audit
    entry are committed: nothing a user was told can be lost by a crash (no flush here)."""
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    await hub.receive(
        alice, parse({"type": "call.invite", "id": "1", "to": "bob", "sdp": SDP}), bool
    )
    call_id = (await next_of(bob, "call.incoming"))["call_id"]
    await hub.receive(
        bob, parse({"type": "call.answer", "id": "2", "call_id": call_id, "sdp": SDP}), bool
    )
    await next_of(alice, "call.answered")
    row = hub.cdrs.get(call_id)
    assert row is not None and row.answer_at is not None and row.end_at is None

    await hub.receive(alice, parse({"type": "call.hangup", "id": "3", "call_id": call_id}), bool)
    await next_of(bob, "call.ended")
    row = hub.cdrs.get(call_id)
    assert row is not None and (row.disposition, row.reason) == ("answered", "hangup")
    actions = [e.action for e in AuditLog(store).recent() if e.object == f"call:{call_id}"]
    assert sorted(actions) == ["call.answered", "call.ended", "call.invite"]


def relay_sdp(port: int) -> str:
    return (
        SDP + f"a=candidate:1 1 udp 16777215 127.0.0.1 {port} typ relay raddr 0.0.0.0 rport 0\r\n"
    )


async def test_relay_addresses_of_offer_and_answer_are_in_the_record(hub: SignalingHub) -> None:
    """The offer's relay addresses are in the row when the callee rings, the answer's once the
    caller hears the answer (relay sessions are linked to the call by them); a refused answer
    (another account's device, the caller's own) adds nothing."""
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    mallory, _ = await hub.connect("mallory", "Mallory", False)
    invite = {"type": "call.invite", "id": "1", "to": "bob", "sdp": relay_sdp(40000)}
    await hub.receive(alice, parse(invite), bool)
    call_id = (await next_of(bob, "call.incoming"))["call_id"]
    row = hub.cdrs.get(call_id)
    assert row is not None and row.relay_candidates == ("127.0.0.1:40000",)

    stray = {"type": "call.answer", "id": "2", "call_id": call_id, "sdp": relay_sdp(40666)}
    await hub.receive(mallory, parse(stray), bool)
    assert (await next_of(mallory, "error"))["id"] == "2"
    await hub.receive(alice, parse(stray), bool)  # the caller cannot answer its own call
    assert (await next_of(alice, "error"))["id"] == "2"
    answer = {"type": "call.answer", "id": "3", "call_id": call_id, "sdp": relay_sdp(40002)}
    await hub.receive(bob, parse(answer), bool)
    await next_of(alice, "call.answered")
    row = hub.cdrs.get(call_id)
    assert row is not None and row.relay_candidates == ("127.0.0.1:40000", "127.0.0.1:40002")
