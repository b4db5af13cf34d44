"""The signaling hub of one node among several (signaling/cluster.py explains the model).

`ClusterHub` adds to `SignalingHub`, around the same engine:

- presence: every device that connects here is announced on the bus; an invite first asks the
  bus for the callee's devices on other nodes and enters them in the engine as remote devices,
  so they ring with the local ones (first answer wins, the others hear `answered-elsewhere`);
- routing: engine messages for a remote device go to its node; a local device's request about a
  call another node owns goes to that node; a local device that disconnects is reported to the
  nodes owning its calls;
- administration: live calls and presence merge the other nodes' snapshots; ending a call owned
  elsewhere asks its owner.

Fail closed: when the bus cannot say where the callee's devices are, the invite is refused with
`unavailable` and no record is written. Calls already established keep their media (it never
crosses a signaling node).

A call outlives its node (signaling/handover.py): a party whose node died sends
`call.reattach` to any node; the call's owner (if alive) rebinds it, else this node takes the
record over (compare-and-set in the database) and rebuilds the call. Calls nobody re-attached
are finalized `node-lost` by a surviving node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from callgate.signaling import messages as m
from callgate.signaling.anchoring import PHONE_AGENT
from callgate.signaling.cluster import (
    ClusterBus,
    ClusterUnavailable,
    RemoteDevice,
    live_call_from_json,
    live_call_json,
)
from callgate.signaling.effects import Effect, Send
from callgate.signaling.handover import LEASE, held_call, refusal, silent_since
from callgate.signaling.hub import Device, SignalingHub, is_number
from callgate.signaling.live import LiveCall
from callgate.signaling.reasons import EndedBy, Reason
from callgate.signaling.relay_choice import RelayIce
from callgate.signaling.sdp import normalize_addresses

log = logging.getLogger(__name__)

MAX_REMOTE_CALLS = 50_000  # calls owned elsewhere that local devices took part in (remembered)
_ENDED = "call.ended"


class ClusterHub(SignalingHub):
    def __init__(self, *args: Any, bus: ClusterBus, lease: float = LEASE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus = bus
        self.lease = lease  # seconds a silent node keeps its calls (docs/scaling.md)
        self._sweeper: asyncio.Task[None] | None = None
        self.relay: dict[str, Any] = {}  # where this node's relay is reached (iceconfig.py)
        self.elsewhere = self._post_send
        self._names: dict[str, tuple[str, bool]] = {}  # local device -> (display name, relay)
        self._remote: dict[str, RemoteDevice] = {}  # remote devices entered in the engine
        self._owners: dict[str, str] = {}  # call owned elsewhere -> its node
        self._device_calls: dict[str, set[str]] = {}  # local device -> live calls owned elsewhere
        self._remote_parties: dict[str, frozenset[str]] = {}  # such a call -> its two users
        self._snapshot_pairs: tuple[float, set[frozenset[str]]] = (-1.0, set())
        # separate relays (signaling/relay_choice.py): the callee of a call gets the caller's
        self.relay_ice: RelayIce | None = None
        self._own_relays = self.engine.relay_addresses
        bus.attach(self)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self._sweeper = asyncio.create_task(self._run_sweeper(), name="cluster-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await super().stop()

    # -- devices -----------------------------------------------------------------------------------

    async def connect(
        self,
        handle: str,
        display_name: str,
        relay_only: bool,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[Device, list[Effect]]:
        device, effects = await super().connect(
            handle, display_name, relay_only, address=address, user_agent=user_agent
        )
        self._names[device.device_id] = (display_name, relay_only)
        self.bus.device_up(self._announced(device))
        return device, effects

    async def disconnect(self, device: Device) -> None:
        await super().disconnect(device)
        announced = self._announced(device)
        self._names.pop(device.device_id, None)
        self.bus.device_down(announced)
        calls = self._device_calls.pop(device.device_id, set())
        for call_id in calls:
            if not any(call_id in held for held in self._device_calls.values()):
                self._remote_parties.pop(call_id, None)
        for node in {self._owners[c] for c in calls if c in self._owners}:
            self.bus.post(node, {"op": "gone", "device": device.device_id})

    def _announced(self, device: Device) -> RemoteDevice:
        name, relay_only = self._names.get(device.device_id, (device.handle, False))
        phone = device.user_agent == PHONE_AGENT
        return RemoteDevice(
            device.device_id, device.handle, name, relay_only, self.bus.node_id, phone
        )

    def remote_phone(self, handle: str) -> bool:
        """Has `handle` a registered SIP phone on another node? (as its invite found them)"""
        return any(d.handle == handle and d.phone for d in self._remote.values())

    def local_devices(self) -> list[RemoteDevice]:
        return [self._announced(device) for device in self.devices.values()]

    # -- requests ----------------------------------------------------------------------------------

    async def receive(
        self, device: Device, message: m.ClientMessage, callee_exists: Callable[[str], bool]
    ) -> None:
        if isinstance(message, m.Invite):
            local = message.to == device.handle or is_number(message.to)  # numbers: this node
            if not local and not await self._find_callee(device, message):
                return
            if is_number(message.to):
                await super().receive(device, message, callee_exists)
                return
            # before anyone rings: the relays admit the pair before the clients ask them
            pair = (device.handle, message.to)
            await self.bus.announce_pair(pair)
            await super().receive(device, message, callee_exists)
            if not self.engine.together(*pair):  # refused (policy, busy…): no call to relay
                await self.bus.announce_pair(pair, live=False)
            return
        if isinstance(message, m.Reattach):
            await self._reattach(device, message)
            return
        owner = self._owners.get(getattr(message, "call_id", ""))
        if owner is None:
            await super().receive(device, message, callee_exists)
            return
        # A call another node owns: its engine decides (acks and errors come back from there).
        if not self.bus.available:
            text = "the cluster bus is unreachable; try again"
            self.send(device, m.error_message(message.id, m.UNAVAILABLE, text))
            return
        request = {"op": "in", "device": device.device_id, "msg": message.model_dump(mode="json")}
        self.bus.post(owner, request, lambda: self._owner_gone(device, message.id))

    def _owner_gone(self, device: Device, request_id: str) -> None:
        """The node holding the call is not on the bus: say so now (the client re-attaches)."""
        text = "the node holding this call is gone; re-attach to the call (call.reattach)"
        self.send(device, m.error_message(request_id, m.UNAVAILABLE, text))

    async def _find_callee(self, device: Device, invite: m.Invite) -> bool:
        """Enter the callee's devices on other nodes in the engine; False (and the caller told
        why) when the bus cannot say where they are."""
        try:
            found = await self.bus.devices_of(invite.to)
        except ClusterUnavailable as exc:
            log.warning("refusing a call from %s: %s", device.handle, exc)
            text = f"call not placed: {exc}"
            self.send(device, m.error_message(invite.id, m.UNAVAILABLE, text))
            return False
        current = {d.device_id for d in found}
        for old in [d for d in self._remote.values() if d.handle == invite.to]:
            if old.device_id not in current and self.engine.call_of(old.device_id) is None:
                self._forget(old.device_id)
        for remote in found:
            if remote.device_id not in self._remote:
                self._remote[remote.device_id] = remote
                self.engine.device_connected(
                    remote.device_id, remote.handle, remote.display_name, remote.relay_only
                )
        return True

    def _forget(self, device_id: str) -> list[Effect]:
        self._remote.pop(device_id, None)
        return self.engine.device_disconnected(device_id)

    def _post_send(self, effect: Send) -> None:
        remote = self._remote.get(effect.device_id)
        if remote is None:
            return
        message = {"op": "send", "device": remote.device_id, "owner": self.bus.node_id}
        self.bus.post(remote.node, {**message, "msg": effect.message})
        if effect.message.get("type") == _ENDED and self.engine.call_of(remote.device_id) is None:
            self._forget(remote.device_id)  # enters again, fresh, at its next call

    # -- a call outlives its node ------------------------------------------------------------------

    async def _reattach(self, device: Device, request: m.Reattach) -> None:
        """A party's device takes its side of an answered call back: here if this node holds the
        call, through its owner if that node lives, else by taking the call over."""
        call_id = request.call_id
        if self.engine.is_live(call_id):
            await self._adopted(
                call_id, self.engine.reattach(device.device_id, request.id, call_id)
            )
            return
        if not self.bus.available:
            text = "the cluster bus is unreachable; try again"
            self.send(device, m.error_message(request.id, m.UNAVAILABLE, text))
            return
        record = await asyncio.to_thread(self.cdrs.get, call_id)
        why = refusal(record, device.handle, self.bus.node_id)
        if why is not None or record is None:
            code, text = why or (m.NOT_FOUND, "no such call")
            self.send(device, m.error_message(request.id, code, text))
            return
        owner = record.node_id
        if owner is not None and owner in self.bus.snapshots():  # alive: it rebinds the call
            forward: dict[str, Any] = {"op": "reattach", "call": call_id, "id": request.id}
            forward["device"] = self._announced(device).as_json()
            self.bus.post(owner, forward, lambda: self._owner_gone(device, request.id))
            return
        since = silent_since(self.clock.wall(), self.lease)
        if not await asyncio.to_thread(self.cdrs.take_over, call_id, owner, since):
            text = (
                f"the call's node stopped answering; it is taken over once silent for "
                f"{self.lease:g} s: try again"
            )
            self.send(device, m.error_message(request.id, m.UNAVAILABLE, text))
            return
        log.warning(
            "took call %s over from node %s (re-attached by %s)", call_id, owner, device.handle
        )
        held = held_call(record)
        other = held.callee_device if device.handle == held.caller_handle else held.caller_device
        remote = await self._locate(
            other, held.callee_handle if other == held.callee_device else held.caller_handle
        )
        self._parties[call_id] = (held.caller_handle, held.callee_handle)
        self._answered.add(call_id)
        if held.media:
            self._media_calls.add(call_id)
        await self._adopted(call_id, self.engine.adopt(held, device.device_id, request.id))
        if remote is not None:  # the other party's node: requests about the call come here now
            self.bus.post(remote.node, {"op": "owner", "call": call_id, "owner": self.bus.node_id})

    async def _locate(self, device_id: str, handle: str) -> RemoteDevice | None:
        """The other party's device, if connected to another live node: entered in the engine."""
        if device_id in self.devices:
            return None
        try:
            found = await self.bus.devices_of(handle)
        except ClusterUnavailable:
            return None
        for remote in found:
            if remote.device_id == device_id:
                if device_id not in self._remote:
                    self._remote[device_id] = remote
                    self.engine.device_connected(
                        device_id, remote.handle, remote.display_name, remote.relay_only
                    )
                return remote
        return None

    async def _adopted(self, call_id: str, effects: list[Effect]) -> None:
        """This node holds the call now: local devices stop routing it elsewhere."""
        self._owners.pop(call_id, None)
        self._remote_parties.pop(call_id, None)
        for calls in self._device_calls.values():
            calls.discard(call_id)
        await self.apply(effects)

    async def _remote_reattach(self, raw: dict[str, Any], call_id: str, request_id: str) -> None:
        remote = RemoteDevice.from_json(raw)
        if remote.device_id not in self._remote:
            self._remote[remote.device_id] = remote
            self.engine.device_connected(
                remote.device_id, remote.handle, remote.display_name, remote.relay_only
            )
        await self.apply(self.engine.reattach(remote.device_id, request_id, call_id))
        if self.engine.call_of(remote.device_id) is None:
            self._forget(remote.device_id)

    async def _run_sweeper(self) -> None:
        """Every second while the bus is down: the remote parties' silence is excused (their
        stats cannot arrive). Every half lease: finalize the calls of dead nodes nobody
        re-attached."""
        last_sweep = self.clock.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if self.relay_ice is not None:  # relay candidates may point at registered relays
                registered = normalize_addresses(self.relay_ice.addresses())
                self.engine.relay_addresses = self._own_relays | registered
            if not self.bus.available:
                self.engine.excuse_silence(list(self._remote))
                continue  # fail closed: without the bus, no node is known dead
            if self.clock.monotonic() - last_sweep < self.lease / 2:
                continue
            last_sweep = self.clock.monotonic()
            alive = {self.bus.node_id, *self.bus.snapshots()}
            since = silent_since(self.clock.wall(), 2 * self.lease)
            try:
                lost = await asyncio.to_thread(self.cdrs.close_lost, alive, since)
            except Exception:
                log.exception("finalizing the calls of lost nodes failed")
                continue
            if lost:
                log.warning("finalized %d call(s) of lost node(s) as node-lost", len(lost))
                self._lost(lost)
                for node in self.bus.snapshots():
                    self.bus.post(node, {"op": "lost", "calls": lost})

    def _lost(self, call_ids: Sequence[str]) -> None:
        """Tell the devices here that took part in these calls (their node died) they ended."""
        for device_id, calls in self._device_calls.items():
            device = self.devices.get(device_id)
            for call_id in [c for c in call_ids if c in calls]:
                calls.discard(call_id)
                self._owners.pop(call_id, None)
                self._remote_parties.pop(call_id, None)
                if device is not None:
                    self.send(device, m.ended_message(call_id, Reason.NODE_LOST, EndedBy.SERVER))

    # -- messages from other nodes -----------------------------------------------------------------

    async def on_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        try:
            if op == "send":
                self._deliver(str(message["device"]), str(message["owner"]), message["msg"])
            elif op == "in":
                await self._remote_request(str(message["device"]), message["msg"])
            elif op == "gone":
                device_id = str(message["device"])
                if device_id in self._remote:
                    await self.apply(self._forget(device_id))
            elif op == "end":
                await super().end_call(str(message["call"]), str(message["admin"]))
            elif op == "reattach":
                call_id, request_id = str(message["call"]), str(message["id"])
                await self._remote_reattach(dict(message["device"]), call_id, request_id)
            elif op == "owner":
                self._note_owner(str(message["call"]), str(message["owner"]))
            elif op == "lost":
                self._lost([str(call_id) for call_id in message["calls"]][:1000])
        except (KeyError, TypeError, ValueError, m.ProtocolError) as exc:
            log.warning("bad message from the cluster bus (%s): %s", op, exc)

    def _deliver(self, device_id: str, owner: str, msg: dict[str, Any]) -> None:
        device = self.devices.get(device_id)
        if device is None:  # gone from here: its call must not wait for it
            self.bus.post(owner, {"op": "gone", "device": device_id})
            return
        call_id = msg.get("call_id")
        if isinstance(call_id, str):
            calls = self._device_calls.setdefault(device_id, set())
            if msg.get("type") == "call.incoming" and isinstance(msg.get("from"), dict):
                caller = str(msg["from"].get("handle"))
                self._remote_parties[call_id] = frozenset((caller, device.handle))
            if msg.get("type") == _ENDED:
                calls.discard(call_id)
                if not any(call_id in held for held in self._device_calls.values()):
                    self._remote_parties.pop(call_id, None)
            else:
                calls.add(call_id)
                self._note_owner(call_id, owner)
        self.send(device, msg)

    def send(self, device: Device, message: dict[str, Any]) -> None:
        """A `call.incoming` carries the callee's ICE servers with the caller's relay first
        (signaling/relay_choice.py): both parties then allocate on one relay."""
        if message.get("type") == "call.incoming" and self.relay_ice is not None:
            servers = self.relay_ice.for_call(
                device.handle, self.clock.wall(), str(message.get("sdp", ""))
            )
            if servers is not None:
                message = {**message, "ice_servers": servers}
        super().send(device, message)

    def _note_owner(self, call_id: str, owner: str) -> None:
        if call_id not in self._owners and len(self._owners) >= MAX_REMOTE_CALLS:
            del self._owners[next(iter(self._owners))]
        self._owners[call_id] = owner

    async def _remote_request(self, device_id: str, raw: dict[str, Any]) -> None:
        remote = self._remote.get(device_id)
        if remote is None:
            return  # not a device this node rang: nothing to do
        message = m.parse_client_message(json.dumps(raw), m.MAX_MESSAGE_BYTES, m.MAX_SDP_BYTES)
        if isinstance(message, m.Invite):
            return  # invites are placed on the caller's own node
        stand_in = Device(device_id, remote.handle, asyncio.Queue(1))
        await super().receive(stand_in, message, lambda _handle: False)

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
        pairs = sorted(sorted(pair) for pair in set(self._remote_parties.values()))
        return {"calls": calls, "pairs": pairs, "presence": self.presence(), "relay": self.relay}

    def peer_relays(self) -> dict[str, dict[str, Any]]:
        """The other live nodes' relays by node id, as their snapshots say."""
        found = {node: s.get("relay") for node, s in self.bus.snapshots().items()}
        return {node: relay for node, relay in found.items() if isinstance(relay, dict) and relay}
