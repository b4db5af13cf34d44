"""A call outlives its node (docs/scaling.md, "When a node dies"; signaling/handover.py).

A party whose node died sends `call.reattach` to any node: the call's holder, if alive, rebinds
it; else this node takes the record over (compare-and-set in the database) and rebuilds the call.
Every half lease, calls of dead nodes nobody re-attached are finalized `node-lost` by a
surviving node, and the devices here that took part in them are told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from callgate.signaling import messages as m
from callgate.signaling.cluster import ClusterUnavailable, RemoteDevice
from callgate.signaling.cluster_view import ClusterView
from callgate.signaling.effects import Effect
from callgate.signaling.handover import held_call, refusal, silent_since
from callgate.signaling.hub import Device
from callgate.signaling.reasons import EndedBy, Reason
from callgate.signaling.sdp import normalize_addresses

log = logging.getLogger(__name__)

MAX_LOST = 1000  # call ids in one `lost` message (a receiver reads no more)


class ClusterTakeover(ClusterView):
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
                for node in self.bus.snapshots():  # in the slices the receiver reads
                    for at in range(0, len(lost), MAX_LOST):
                        self.bus.post(node, {"op": "lost", "calls": lost[at : at + MAX_LOST]})

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
