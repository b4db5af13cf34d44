"""What a node among several knows of the other nodes, and shows of the whole cluster
(signaling/cluster.py explains the model).

`ClusterView` holds what a node keeps about calls and devices on other nodes — the remote devices
entered in its engine, which node holds each call its devices take part in, and those calls'
parties — and answers for the whole cluster: live calls and presence merged with the other
nodes' snapshots, an administrator's end-call asked of the call's holder, call-bound relaying for
a pair in a live call on any node, and this node's own snapshot for the others.

signaling/cluster_takeover.py (a call outlives its node) and signaling/cluster_hub.py (routing
devices' requests and the other nodes' messages) build on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from callgate.signaling import messages as m
from callgate.signaling.anchoring import PHONE_AGENT
from callgate.signaling.cluster import (
    ClusterBus,
    RemoteDevice,
    live_call_from_json,
    live_call_json,
)
from callgate.signaling.effects import Effect
from callgate.signaling.handover import LEASE
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.live import LiveCall
from callgate.signaling.relay_choice import RelayIce

MAX_REMOTE_CALLS = 50_000  # calls owned elsewhere that local devices took part in (remembered)


class ClusterView(SignalingHub):
    def __init__(self, *args: Any, bus: ClusterBus, lease: float = LEASE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus = bus
        self.lease = lease  # seconds a silent node keeps its calls (docs/scaling.md)
        self._sweeper: asyncio.Task[None] | None = None
        self.relay: dict[str, Any] = {}  # where this node's relay is reached (iceconfig.py)
        self._names: dict[str, tuple[str, bool]] = {}  # local device -> (display name, relay)
        self._remote: dict[str, RemoteDevice] = {}  # remote devices entered in the engine
        self._owners: dict[str, str] = {}  # call owned elsewhere -> its node
        self._device_calls: dict[str, set[str]] = {}  # local device -> live calls owned elsewhere
        self._remote_parties: dict[str, frozenset[str]] = {}  # such a call -> its two users
        self._snapshot_pairs: tuple[float, set[frozenset[str]]] = (-1.0, set())
        # separate relays (signaling/relay_choice.py): the callee of a call gets the caller's
        self.relay_ice: RelayIce | None = None
        self._own_relays = self.engine.relay_addresses

    # -- devices and calls elsewhere ---------------------------------------------------------------

    def _announced(self, device: Device) -> RemoteDevice:
        name, relay_only = self._names.get(device.device_id, (device.handle, False))
        phone = device.user_agent == PHONE_AGENT
        return RemoteDevice(
            device.device_id, device.handle, name, relay_only, self.bus.node_id, phone
        )

    def remote_phone(self, handle: str) -> bool:
        """Has `handle` a registered SIP phone on another node? (as its invite found them)"""
        return any(d.handle == handle and d.phone for d in self._remote.values())

    def holder_relay(self, call_id: str) -> dict[str, Any] | None:
        """The relay of the node holding `call_id`, if another live node holds it: a recorded
        call's anchor is on that relay, so a server-side leg here for its callee (a SIP phone's
        bridge) allocates there too (call-bound relaying pairs allocations of one relay)."""
        owner = self._owners.get(call_id)
        return None if owner is None else self.peer_relays().get(owner)

    def _forget(self, device_id: str) -> list[Effect]:
        self._remote.pop(device_id, None)
        return self.engine.device_disconnected(device_id)

    def _note_owner(self, call_id: str, owner: str) -> None:
        if call_id not in self._owners and len(self._owners) >= MAX_REMOTE_CALLS:
            del self._owners[next(iter(self._owners))]
        self._owners[call_id] = owner

    def _owner_gone(self, device: Device, request_id: str) -> None:
        """The node holding the call is not on the bus: say so now (the client re-attaches)."""
        text = "the node holding this call is gone; re-attach to the call (call.reattach)"
        self.send(device, m.error_message(request_id, m.UNAVAILABLE, text))

    # -- administration ----------------------------------------------------------------------------

    def live_calls(self) -> list[LiveCall]:
        calls = super().live_calls()
        for snapshot in self.bus.snapshots().values():
            calls.extend(live_call_from_json(raw) for raw in snapshot.get("calls", []))
        return sorted(calls, key=lambda call: call.invited_at)

    async def end_call(self, call_id: str, admin: str) -> bool:
        if await super().end_call(call_id, admin):
            return True
        for node, snapshot in self.bus.snapshots().items():
            if any(raw.get("call_id") == call_id for raw in snapshot.get("calls", [])):
                self.bus.post(node, {"op": "end", "call": call_id, "admin": admin})
                return True
        return False

    def together(self, user_a: str, user_b: str) -> bool:
        """Call-bound relaying on a node among several: a live call between these users held
        here, rung here from elsewhere, or listed by another node (a second old at most)."""
        if self.numbers is not None and self.numbers.together(user_a, user_b):
            return True  # a number call's bridge and its caller (runtime/sip_numbers.py)
        if self.engine.together(user_a, user_b):
            return True
        pair = frozenset((user_a, user_b))
        if pair in self._remote_parties.values():
            return True
        now = self.clock.monotonic()
        at, pairs = self._snapshot_pairs
        if now - at >= 1.0:
            pairs = {
                frozenset((str(raw.get("caller")), str(raw.get("callee"))))
                for snapshot in self.bus.snapshots().values()
                for raw in snapshot.get("calls", [])
            }
            self._snapshot_pairs = (now, pairs)
        return pair in pairs

    def presence(self) -> dict[str, str]:
        """Handle -> "in-call" or "online" for devices connected here."""
        out: dict[str, str] = {}
        for device in self.devices.values():
            busy = self.engine.call_of(device.device_id) is not None
            if busy or self._device_calls.get(device.device_id):
                out[device.handle] = "in-call"
            else:
                out.setdefault(device.handle, "online")
        return out

    def cluster_presence(self) -> dict[str, str]:
        """Presence on the other nodes (the directory merges it with this node's)."""
        out: dict[str, str] = {}
        for snapshot in self.bus.snapshots().values():
            for handle, state in dict(snapshot.get("presence", {})).items():
                if state == "in-call" or handle not in out:
                    out[str(handle)] = str(state)
        return out

    def snapshot(self) -> dict[str, Any]:
        calls = [live_call_json(call) for call in super().live_calls()]
        # calls held elsewhere that devices here take part in: a registered relay keeps
        # admitting their parties while the holder is dead and before a take-over
        held = set(self._remote_parties.values())
        # a ring group's call ringing here lists the group as its callee: the relays admit the
        # caller with each member actually rung (signaling/engine.py `invite_group`)
        held |= {
            frozenset((call.caller.handle, member))
            for call in self.engine.live_calls()
            for member in call.members
        }
        pairs = sorted(sorted(pair) for pair in held)
        return {"calls": calls, "pairs": pairs, "presence": self.presence(), "relay": self.relay}

    def peer_relays(self) -> dict[str, dict[str, Any]]:
        """The other live nodes' relays by node id, as their snapshots say."""
        found = {node: s.get("relay") for node, s in self.bus.snapshots().items()}
        return {node: relay for node, relay in found.items() if isinstance(relay, dict) and relay}
