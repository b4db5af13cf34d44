"""The signaling hub of one node among several (signaling/cluster.py explains the model).

`ClusterHub` adds to `SignalingHub`, around the same engine (with signaling/cluster_view.py, what
the node knows of the others, and signaling/cluster_takeover.py, a call outliving its node):

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

A call outlives its node (signaling/cluster_takeover.py): a party whose node died sends
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
from callgate.signaling.cluster import ClusterUnavailable, RemoteDevice
from callgate.signaling.cluster_takeover import MAX_LOST, ClusterTakeover
from callgate.signaling.effects import Effect, Send
from callgate.signaling.hub import Device, SignalingHub, is_number

log = logging.getLogger(__name__)

_ENDED = "call.ended"


class ClusterHub(ClusterTakeover):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # ClusterView's: the bus, the lease, the state
        self.elsewhere = self._post_send
        self.bus.attach(self)

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

    async def _find_callee(self, device: Device, invite: m.Invite) -> bool:
        """Enter the callee's devices on other nodes in the engine; False (and the caller told
        why) when the bus cannot say where they are."""
        try:
            await self._enter_remote(invite.to)
        except ClusterUnavailable as exc:
            log.warning("refusing a call from %s: %s", device.handle, exc)
            text = f"call not placed: {exc}"
            self.send(device, m.error_message(invite.id, m.UNAVAILABLE, text))
            return False
        return True

    async def enter_members(self, caller: str, members: Sequence[str], live: bool) -> str | None:
        """A ring group's members on other nodes ring too, and the relays admit each pair
        before anyone rings (and forget those of members that did not ring). The lookups and
        announces go out at once, not one round trip after another. When the bus cannot say
        where every member's devices are, nobody rings (fail closed, as for a call to one
        user): the reason is returned, logged once."""
        if live:
            found = await asyncio.gather(
                *(self._enter_remote(h) for h in members), return_exceptions=True
            )
            failed = [e for e in found if isinstance(e, BaseException)]
            if failed:
                unexpected = [e for e in failed if not isinstance(e, ClusterUnavailable)]
                if unexpected:
                    raise unexpected[0]
                why = f"the devices of {len(failed)} of {len(members)} members: {failed[0]}"
                log.warning("refusing a call from %s to a ring group: %s", caller, why)
                return why
        await asyncio.gather(*(self.bus.announce_pair((caller, h), live=live) for h in members))
        return None

    async def _enter_remote(self, handle: str) -> None:
        """Enter `handle`'s devices on other nodes in the engine (ClusterUnavailable: the bus
        cannot say where they are)."""
        found = await self.bus.devices_of(handle)
        current = {d.device_id for d in found}
        for old in [d for d in self._remote.values() if d.handle == handle]:
            if old.device_id not in current and self.engine.call_of(old.device_id) is None:
                self._forget(old.device_id)
        for remote in found:
            if remote.device_id not in self._remote:
                self._remote[remote.device_id] = remote
                self.engine.device_connected(
                    remote.device_id, remote.handle, remote.display_name, remote.relay_only
                )

    def _post_send(self, effect: Send) -> None:
        remote = self._remote.get(effect.device_id)
        if remote is None:
            return
        message = {"op": "send", "device": remote.device_id, "owner": self.bus.node_id}
        self.bus.post(remote.node, {**message, "msg": effect.message})
        if effect.message.get("type") == _ENDED and self.engine.call_of(remote.device_id) is None:
            self._forget(remote.device_id)  # enters again, fresh, at its next call

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
                # this node's own call only (ClusterView.end_call would ask the others again)
                await SignalingHub.end_call(self, str(message["call"]), str(message["admin"]))
            elif op == "reattach":
                call_id, request_id = str(message["call"]), str(message["id"])
                await self._remote_reattach(dict(message["device"]), call_id, request_id)
            elif op == "owner":
                self._note_owner(str(message["call"]), str(message["owner"]))
            elif op == "lost":
                self._lost([str(call_id) for call_id in message["calls"]][:MAX_LOST])
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

    async def _remote_request(self, device_id: str, raw: dict[str, Any]) -> None:
        remote = self._remote.get(device_id)
        if remote is None:
            return  # not a device this node rang: nothing to do
        message = m.parse_client_message(json.dumps(raw), m.MAX_MESSAGE_BYTES, m.MAX_SDP_BYTES)
        if isinstance(message, m.Invite):
            return  # invites are placed on the caller's own node
        stand_in = Device(device_id, remote.handle, asyncio.Queue(1))
        await super().receive(stand_in, message, lambda _handle: False)
