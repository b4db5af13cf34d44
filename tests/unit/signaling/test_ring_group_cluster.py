"""Ring groups across nodes without sockets: two `ClusterHub`s joined by an in-memory bus (the
`ClusterBus` protocol, as runtime/redis_bus.py carries it between processes). A member whose
device is on the other node rings and answers; the node's snapshot lists the pairs actually
rung for the relays; with the bus down nobody rings (as for a call to one user); a recorded
group call whose recorder fails rings nobody and withdraws every member's pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from callgate.clock import SystemClock
from callgate.recording.service import RecordingService
from callgate.recording.writer import RecordingFailure
from callgate.records.cdr import CdrRepository
from callgate.records.quality_store import QualityRepository
from callgate.signaling.anchoring import Anchoring
from callgate.signaling.cluster import ClusterPeer, ClusterUnavailable, RemoteDevice
from callgate.signaling.cluster_hub import ClusterHub
from callgate.signaling.engine import CallEngine
from callgate.signaling.hub import Device
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.types.decisions import Grant
from tests.integration.hub_helpers import next_of, parse

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CARRIER = "+15550001111"


class Fabric:
    """What the nodes' buses share: every node's devices, peers and announced pairs."""

    def __init__(self) -> None:
        self.devices: dict[str, RemoteDevice] = {}
        self.peers: dict[str, ClusterPeer] = {}
        self.pairs: list[tuple[tuple[str, str], bool]] = []
        self.lookups = 0
        self.down = False


class MemoryBus:
    def __init__(self, fabric: Fabric, node_id: str) -> None:
        self.fabric, self.node_id = fabric, node_id

    @property
    def available(self) -> bool:
        return not self.fabric.down

    def attach(self, peer: ClusterPeer) -> None:
        self.fabric.peers[self.node_id] = peer

    async def devices_of(self, handle: str) -> list[RemoteDevice]:
        self.fabric.lookups += 1
        if self.fabric.down:
            raise ClusterUnavailable("the cluster bus (memory) is down")
        found = self.fabric.devices.values()
        return [d for d in found if d.handle == handle and d.node != self.node_id]

    def device_up(self, device: RemoteDevice) -> None:
        self.fabric.devices[device.device_id] = device

    def device_down(self, device: RemoteDevice) -> None:
        self.fabric.devices.pop(device.device_id, None)

    def post(
        self, node: str, message: dict[str, Any], undelivered: Callable[[], None] | None = None
    ) -> None:
        peer = self.fabric.peers.get(node)
        if peer is not None and not self.fabric.down:
            asyncio.get_running_loop().create_task(peer.on_message(message))

    def snapshots(self) -> dict[str, dict[str, Any]]:
        peers = self.fabric.peers.items()
        return {node: peer.snapshot() for node, peer in peers if node != self.node_id}

    async def announce_pair(self, users: tuple[str, str], *, live: bool = True) -> None:
        self.fabric.pairs.append((users, live))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url(tmp_path / "cluster.db"))
    yield opened
    opened.close()


@pytest.fixture
async def nodes(store: Store) -> AsyncIterator[tuple[Fabric, ClusterHub, ClusterHub]]:
    fabric = Fabric()
    hubs = [
        ClusterHub(
            CallEngine(SystemClock()),
            CdrRepository(store),
            QualityRepository(store.sessions),
            SystemClock(),
            link_delays=(),
            node_id=node,
            bus=MemoryBus(fabric, node),
        )
        for node in ("n1", "n2")
    ]
    for hub in hubs:
        await hub.start()
    try:
        yield fabric, hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await hub.stop()


def queued(device: Device) -> list[str]:
    return [str(msg["type"]) for msg in device.queue._queue if msg is not None]  # type: ignore[attr-defined]


async def test_a_member_on_another_node_rings_answers_and_the_snapshot_lists_the_pairs(
    nodes: tuple[Fabric, ClusterHub, ClusterHub], store: Store
) -> None:
    fabric, n1, n2 = nodes
    carrier, _ = await n1.connect(CARRIER, f"{CARRIER} (carrier)", True)
    alice, _ = await n1.connect("alice", "Alice", False)
    bob, _ = await n2.connect("bob", "Bob", False)  # bob's only device is on the other node
    dave, _ = await n2.connect("dave", "Dave", False)

    members = ("alice", "bob", "carol", "dave")
    await n1.invite_group(carrier, "1", "desk", SDP, lambda group: members)
    incoming = await next_of(bob, "call.incoming")  # rung from n1 through the bus
    await next_of(alice, "call.incoming")
    await next_of(dave, "call.incoming")
    call_id = str(incoming["call_id"])
    assert (await next_of(carrier, "call.ringing"))["devices"] == 3
    assert fabric.lookups == 4  # one lookup per member (carol: online nowhere)
    assert sorted(fabric.pairs) == sorted(
        [*(((CARRIER, h), True) for h in members), ((CARRIER, "carol"), False)]
    )
    # the relays admit the caller with each member rung, not with "group:desk" only
    pairs = n1.snapshot()["pairs"]
    assert pairs == [sorted((CARRIER, h)) for h in ("alice", "bob", "dave")]
    assert n1.together(CARRIER, "bob") and not n1.together(CARRIER, "carol")

    # dave declines on his node: he drops out of the snapshot and the relays are told at once
    await n2.receive(dave, parse({"type": "call.reject", "id": "r", "call_id": call_id}), bool)
    assert (await next_of(carrier, "call.ringing"))["devices"] == 2
    assert n1.snapshot()["pairs"] == [sorted((CARRIER, h)) for h in ("alice", "bob")]
    async with asyncio.timeout(15):  # the announce follows the reply: wait for it
        while fabric.pairs[-1] != ((CARRIER, "dave"), False):
            await asyncio.sleep(0.01)
    assert not n1.together(CARRIER, "dave")

    await n2.receive(bob, parse({"type": "call.answer", "id": "2", "call_id": call_id,
                                 "sdp": SDP}), bool)  # fmt: skip
    await next_of(carrier, "call.answered")
    assert (await next_of(alice, "call.ended"))["reason"] == "answered-elsewhere"
    await n1.flush()
    row = n1.cdrs.get(call_id)
    assert row is not None and (row.callee_user, row.callee_device) == ("bob", bob.device_id)
    assert n1.snapshot()["pairs"] == []  # answered: the call itself names the pair now
    assert [(c.caller, c.callee) for c in n1.live_calls()] == [(CARRIER, "bob")]


async def test_with_the_bus_down_a_group_call_is_refused_as_a_call_to_one_user(
    nodes: tuple[Fabric, ClusterHub, ClusterHub], caplog: pytest.LogCaptureFixture
) -> None:
    fabric, n1, _ = nodes
    carrier, _ = await n1.connect(CARRIER, f"{CARRIER} (carrier)", True)
    alice, _ = await n1.connect("alice", "Alice", False)
    fabric.down = True
    members = tuple(f"user{i}" for i in range(20))
    await n1.invite_group(carrier, "1", "desk", SDP, lambda group: ("alice", *members))
    denied = await next_of(carrier, "call.denied")
    assert denied["rule"] == "unavailable" and "cluster bus" in denied["reason"]
    ended = await next_of(carrier, "call.ended")
    await n1.flush()
    row = n1.cdrs.get(str(ended["call_id"]))
    assert row is not None and (row.callee_user, row.disposition) == ("group:desk", "denied")
    assert "call.incoming" not in queued(alice)  # not even the member connected here
    assert fabric.pairs == []  # no relay was told to admit anyone
    assert sum("ring group" in r.getMessage() for r in caplog.records) == 1  # one line, not 21


class RecordAll:
    """A policy whose every call must be recorded."""

    def verdict(self, caller: str, callee: str, at: datetime) -> tuple[None, Grant]:
        return None, Grant("record-all", recording_required=True)


class NoRecorder:
    """A recording service that cannot start a recording (no master key)."""

    async def start(self, *args: Any, **kwargs: Any) -> None:
        raise RecordingFailure("recording master key: missing")


async def test_a_recorded_group_call_whose_recorder_fails_rings_nobody_and_withdraws_the_pairs(
    nodes: tuple[Fabric, ClusterHub, ClusterHub],
) -> None:
    """Fail closed: members on both nodes are held, not rung, until the anchor records the
    caller; when it cannot, the call ends `recording-unavailable` and the relays stop admitting
    the caller with each member at once."""
    fabric, n1, n2 = nodes
    n1.policy = RecordAll()
    n1.anchoring = Anchoring(n1, cast(RecordingService, NoRecorder()), lambda user: [], 10.0)
    carrier, _ = await n1.connect(CARRIER, f"{CARRIER} (carrier)", True)
    alice, _ = await n1.connect("alice", "Alice", False)
    bob, _ = await n2.connect("bob", "Bob", False)
    await n1.invite_group(carrier, "1", "desk", SDP, lambda group: ("alice", "bob"))
    ended = await next_of(carrier, "call.ended")
    assert ended["reason"] == "recording-unavailable"
    async with asyncio.timeout(15):  # the withdrawal follows the end: wait for it
        while len(fabric.pairs) < 4:
            await asyncio.sleep(0.01)
    assert sorted(fabric.pairs) == [
        ((CARRIER, "alice"), False), ((CARRIER, "alice"), True),
        ((CARRIER, "bob"), False), ((CARRIER, "bob"), True),
    ]  # fmt: skip
    assert "call.incoming" not in queued(alice) + queued(bob)
    await n1.flush()
    row = n1.cdrs.get(str(ended["call_id"]))
    assert row is not None and (row.callee_user, row.reason) == (
        "group:desk",
        "recording-unavailable",
    )
    assert row.recording_required and row.ring_at is None


class SlowRecorder:
    """A recording service still starting its recording (the call is held) until closed."""

    async def start(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()


async def test_a_held_group_call_whose_recording_fails_withdraws_the_pairs_at_once(
    nodes: tuple[Fabric, ClusterHub, ClusterHub],
) -> None:
    """The recording fails while the members are held (the recorder's failure callback): the
    call ends `recording-failed` and the relays stop admitting the caller with each member at
    once, not when the pairs expire."""
    fabric, n1, n2 = nodes
    n1.policy = RecordAll()
    n1.anchoring = Anchoring(n1, cast(RecordingService, SlowRecorder()), lambda user: [], 10.0)
    carrier, _ = await n1.connect(CARRIER, f"{CARRIER} (carrier)", True)
    alice, _ = await n1.connect("alice", "Alice", False)
    bob, _ = await n2.connect("bob", "Bob", False)
    await n1.invite_group(carrier, "1", "desk", SDP, lambda group: ("alice", "bob"))
    (call,) = n1.engine.live_calls()
    assert n1.engine.anchoring_call(call.call_id) is not None  # held: nobody rings
    n1.anchoring._failed(call.call_id, "disk full")
    ended = await next_of(carrier, "call.ended")
    assert ended["reason"] == "recording-failed"
    async with asyncio.timeout(15):  # the withdrawal follows the end: wait for it
        while len(fabric.pairs) < 4:
            await asyncio.sleep(0.01)
    assert sorted(fabric.pairs) == [
        ((CARRIER, "alice"), False), ((CARRIER, "alice"), True),
        ((CARRIER, "bob"), False), ((CARRIER, "bob"), True),
    ]  # fmt: skip
    assert "call.incoming" not in queued(alice) + queued(bob)
