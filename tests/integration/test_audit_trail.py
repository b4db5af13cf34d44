"""The audit trail of real traffic: a call through the signaling hub leaves call.* entries in
order, in the CDR's transactions (the CDR points at its call.invite entry); a TURN allocation over
loopback leaves its relay.session summary; and `callgate audit verify` passes afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from callgate.records.audit import AuditLog
from callgate.records.audit_chain import Entry
from callgate.records.relay_sessions import DbEventSink
from callgate.signaling.hub import SignalingHub
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from callgate.types import Transport
from callgate.types.decisions import Denial, Grant
from tests.integration.hub_helpers import next_of, parse, running_hub
from tests.integration.test_cli import callgate
from tests.integration.turn_client import (
    PASSWORD,
    REALM,
    RELAY_PORTS,
    USER,
    udp_client,
    udp_peer,
)

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class WallBetween:
    """A policy denying calls to `blocked` by rule "r7" (the hub's CallPolicy seam)."""

    def __init__(self, blocked: str) -> None:
        self.blocked = blocked

    def verdict(self, caller: str, callee: str, at: datetime) -> tuple[Denial | None, Grant | None]:
        if callee == self.blocked:
            return Denial(rule="r7:wall", reason="ethical wall"), None
        return None, Grant(rule="default")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data: Path) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url(data))
    yield opened
    opened.close()


@pytest.fixture
async def hub(store: Store) -> AsyncIterator[SignalingHub]:
    timeouts = {"ring_timeout": 5, "setup_timeout": 5, "silence_timeout": 5}
    async with running_hub(store, WallBetween("carol"), **timeouts) as hub:
        yield hub


def call_entries(store: Store, call_id: str) -> list[Entry]:
    return [e for e in AuditLog(store).iter_entries() if e.object == f"call:{call_id}"]


async def test_a_call_leaves_its_lifecycle_in_order(
    hub: SignalingHub, store: Store, data: Path, tmp_path: Path
) -> None:
    alice, _ = await hub.connect("alice", "Alice", False, address="192.0.2.1")
    bob, _ = await hub.connect("bob", "Bob", False)
    invite = {"type": "call.invite", "id": "1", "to": "bob", "sdp": SDP}
    await hub.receive(alice, parse(invite), lambda handle: True)
    call_id = (await next_of(bob, "call.incoming"))["call_id"]
    answer = {"type": "call.answer", "id": "2", "call_id": call_id, "sdp": SDP}
    await hub.receive(bob, parse(answer), bool)
    await next_of(alice, "call.answered")
    await asyncio.sleep(0.05)
    await hub.receive(bob, parse({"type": "call.hangup", "id": "3", "call_id": call_id}), bool)
    await next_of(alice, "call.ended")
    await hub.flush()

    trail = call_entries(store, call_id)
    assert [(e.action, e.actor) for e in trail] == [
        ("call.invite", "alice"),
        ("call.answered", "bob"),
        ("call.ended", "bob"),
    ]
    invite_details, _, ended = (json.loads(e.details) for e in trail)
    assert invite_details["callee"] == "bob" and invite_details["caller_address"] == "192.0.2.1"
    assert invite_details["policy_decision"] == "allow"
    assert (ended["disposition"], ended["reason"], ended["ended_by"]) == (
        "answered",
        "hangup",
        "callee",
    )
    assert ended["duration_s"] >= 0.05
    row = hub.cdrs.get(call_id)
    assert row is not None and row.audit_index == trail[0].seq
    assert row.end_at is not None and trail[2].at == row.end_at

    verified = callgate("audit", "verify", "--data-dir", str(data), cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "audit log intact" in verified.stdout


async def test_a_denied_call_is_audited_with_its_rule(hub: SignalingHub, store: Store) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    await hub.connect("carol", "Carol", False)
    invite = {"type": "call.invite", "id": "1", "to": "carol", "sdp": SDP}
    await hub.receive(alice, parse(invite), lambda handle: True)
    denied = await next_of(alice, "call.denied")
    await hub.flush()

    trail = call_entries(store, denied["call_id"])
    assert [(e.action, e.actor) for e in trail] == [
        ("call.invite", "alice"),
        ("call.denied", "system"),
    ]
    assert json.loads(trail[0].details)["policy_decision"] == "deny"
    assert json.loads(trail[1].details) == {"reason": "policy-denied", "rule": "r7:wall"}
    assert AuditLog(store).verify(None).ok


async def test_a_relay_allocation_leaves_its_session_summary(store: Store) -> None:
    config = TurnConfig(
        listen=(("127.0.0.1", 0),),
        relay_port_min=RELAY_PORTS[0],
        relay_port_max=RELAY_PORTS[1],
        realm=REALM,
        users={USER: PASSWORD},
        allow_peers=("127.0.0.0/8",),
    )
    sink = DbEventSink(store.sessions)
    try:
        async with (
            TurnServer(config, events=sink) as server,
            udp_peer() as peer,
            udp_client(server.address(Transport.UDP)) as client,
        ):
            relayed = await client.allocated()
            await client.create_permission(peer.address)
            client.send_indication(peer.address, b"hello peer")
            assert await peer.recv() == (b"hello peer", relayed)
            await client.next_data()  # the peer's echo came back through the relay
            await client.refresh(lifetime=0)
            assert await sink.aflush()
    finally:
        await sink.aclose()

    (summary,) = [e for e in AuditLog(store).iter_entries() if e.action == "relay.session"]
    shown = json.loads(summary.details)
    assert shown["user"] == USER and shown["relay"] == f"{relayed[0]}:{relayed[1]}"
    assert (shown["peers"], shown["packets_to_peer"], shown["packets_to_client"]) == (1, 1, 1)
    assert shown["bytes_to_peer"] == len(b"hello peer") == shown["bytes_to_client"]
    assert shown["end_reason"] == "refresh-0" and shown["duration_s"] >= 0
    assert AuditLog(store).verify(None).ok
