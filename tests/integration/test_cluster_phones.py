"""A registered SIP phone is known to every node (signaling/cluster.py, runtime/redis_bus.py):
its directory entry says it is a phone, sealed with the rest, so a recorded call to its user
from another node is anchored in G.711 and the phone rings (signaling/anchoring.py); a Redis
writer cannot make a browser pass for a phone, nor a phone for a browser."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from callgate.clock import ManualClock
from callgate.recording.service import RecordingService
from callgate.runtime.cluster_seal import ClusterSeal
from callgate.runtime.redis_bus import RedisBus
from callgate.runtime.sip import holder_ice
from callgate.signaling.anchoring import PHONE_AGENT, Anchoring
from callgate.signaling.cluster import RemoteDevice
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.iceconfig import IceServerConfig, relay_config
from tests.redis_server import RedisServer

SEAL = ClusterSeal(b"integration-cluster-key-0123456789abcdef")
FORGER = ClusterSeal(b"someone-else-s-key-0123456789abcdef-xyz")


async def test_a_phone_on_another_node_is_known_as_a_phone(redis_server: RedisServer) -> None:
    node_b = RedisBus(redis_server.url, "b", SEAL, interval=0.1)
    node_a = RedisBus(redis_server.url, "a", SEAL, interval=0.1)
    try:
        await node_b.start()
        await node_a.start()
        await node_b._announce(
            [
                RemoteDevice("desk", "bob", "Bob", False, "b", phone=True),
                RemoteDevice("laptop", "bob", "Bob", False, "b"),
            ]
        )
        # a Redis writer flips the browser into a phone: no longer a genuine entry, not rung
        flipped = RemoteDevice("laptop", "bob", "Bob", False, "b", phone=True).as_json()
        await node_a.client.hset(
            "callgate:dev:carol", "laptop", FORGER.seal("dev", json.dumps(["carol", "laptop"]),
                                                        flipped)
        )  # fmt: skip
        for _ in range(200):
            if node_a.available and "b" in node_a.health()["peers"]:
                break
            await asyncio.sleep(0.05)
        found = {d.device_id: d.phone for d in await node_a.devices_of("bob")}
        assert found == {"desk": True, "laptop": False}
        assert await node_a.devices_of("carol") == []
    finally:
        await node_a.stop()
        await node_b.stop()


class _Hub:
    """What the anchoring asks of its hub to choose a recorded call's codec."""

    def __init__(self, devices: list[Device], remote_phones: set[str]) -> None:
        self.devices = {d.device_id: d for d in devices}
        self._remote_phones = remote_phones

    def remote_phone(self, handle: str) -> bool:
        return handle in self._remote_phones


def test_a_recorded_call_is_in_g711_when_the_callee_has_a_phone_on_any_node() -> None:
    queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
    devices = [Device("d1", "alice", queue, user_agent=PHONE_AGENT), Device("d2", "carol", queue)]

    def has_phone(remote: set[str], handle: str) -> bool:
        hub = cast(SignalingHub, _Hub(devices, remote))
        anchoring = Anchoring(hub, cast(RecordingService, None), lambda user: [], 10.0)
        return anchoring._callee_has_phone(handle)

    assert has_phone(set(), "alice")  # her phone registered on this node
    assert has_phone({"bob"}, "bob")  # his, on another node
    assert not has_phone({"bob"}, "carol")  # a browser only
    # the entry as the directory carries it; entries from before the flag are not phones
    phone = RemoteDevice("desk", "bob", "Bob", False, "b", phone=True)
    assert RemoteDevice.from_json(phone.as_json()) == phone
    old = {k: v for k, v in phone.as_json().items() if k != "phone"}
    assert RemoteDevice.from_json(old).phone is False
    assert RemoteDevice.from_json({**old, "phone": "yes"}).phone is False


class _Holder:
    """A node's view of which node holds a call, and where that node's relay is reached."""

    def holder_relay(self, call_id: str) -> dict[str, Any] | None:
        return {"udp": [["192.0.2.7", 3478]], "tls": []} if call_id == "held-on-a" else None


def test_a_phones_bridge_allocates_on_the_relay_of_the_calls_holder() -> None:
    """A relay pairs only its own allocations (call-bound): the bridge to a phone registered
    here, for a call another node holds (a recorded call's anchor is on that node's relay),
    gets that relay, with credentials signed with the cluster's shared secret."""
    own = IceServerConfig(udp=(("127.0.0.1", 3478),), secret="shared-secret")
    clock = ManualClock()
    hub = cast(SignalingHub, _Holder())
    servers = holder_ice(hub, own, clock, "alice", "held-on-a")
    assert servers is not None and servers[-1]["urls"][0] == "turn:192.0.2.7:3478?transport=udp"
    theirs = servers[-1]
    ours = own.ice_servers("alice", clock.wall())[-1]
    assert (theirs["username"], theirs["credential"]) == (ours["username"], ours["credential"])
    assert holder_ice(hub, own, clock, "alice", "held-here") is None  # this node's own relay
    assert relay_config({"udp": "garbage"}, own) is None  # a malformed snapshot: left out
