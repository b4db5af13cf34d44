"""The signaling hub: the asyncio layer around the pure `CallEngine`.

It owns the connected devices, runs their requests through the engine and carries out the
engine's effects in order: record effects go to the call recorder (records/call_recorder.py),
and a message that follows a record effect is sent only once that record is committed — nobody
rings before the CDR exists, and nobody hears an outcome that a crash could still lose.

`SignalingHub` is composed in layers, each in its module: hub_records.py (its state, and the
record effects for the call recorder), hub_effects.py (carrying out effects in order, the timer),
hub_invites.py (call attempts: rate, policy, ring groups, numbers, the recording anchor) and this
module (devices connecting and leaving, their requests, the administrator's live calls).
hub_types.py holds the parts it is given (protocols) and `Device`. signaling/cluster_hub.py builds
a node among several on it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from callgate.signaling import messages as m
from callgate.signaling.dispatch import handle_message
from callgate.signaling.effects import CdrUpdate, Effect
from callgate.signaling.hub_invites import (
    MEMBERS_UNAVAILABLE,
    POLICY_UNAVAILABLE,
    HubInvites,
    is_number,
)
from callgate.signaling.hub_records import LINK_DELAYS
from callgate.signaling.hub_types import AnchorHooks, CallPolicy, Device, GroupPolicy, NumberCalls
from callgate.signaling.live import LiveCall, live_call
from callgate.signaling.reasons import Party
from callgate.signaling.sdp import relay_candidates

__all__ = [
    "LINK_DELAYS",
    "MEMBERS_UNAVAILABLE",
    "POLICY_UNAVAILABLE",
    "AnchorHooks",
    "CallPolicy",
    "Device",
    "GroupPolicy",
    "NumberCalls",
    "SignalingHub",
    "is_number",
]

_QUEUE_LIMIT = 1000  # messages waiting for a slow client before it is disconnected


class SignalingHub(HubInvites):
    # -- devices -----------------------------------------------------------------------------------

    def remote_phone(self, handle: str) -> bool:
        """Has `handle` a registered SIP phone on another node? (one node: none; cluster_hub.py)"""
        return False

    def holder_relay(self, call_id: str) -> dict[str, Any] | None:
        """Where the relay of the node holding `call_id` is reached, when another node holds it
        (one node: never; cluster_view.py)."""
        return None

    async def connect(
        self,
        handle: str,
        display_name: str,
        relay_only: bool,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[Device, list[Effect]]:
        device = Device(
            uuid.uuid4().hex[:16], handle, asyncio.Queue(_QUEUE_LIMIT), address, user_agent
        )
        self.devices[device.device_id] = device
        self._per_handle[handle] = self._per_handle.get(handle, 0) + 1
        effects = self.engine.device_connected(device.device_id, handle, display_name, relay_only)
        return device, effects

    def device_count(self, handle: str) -> int:
        """Signaling sockets `handle` has open."""
        return self._per_handle.get(handle, 0)

    async def disconnect(self, device: Device) -> None:
        if self.devices.pop(device.device_id, None) is not None:
            left = self._per_handle.pop(device.handle, 1) - 1
            if left:
                self._per_handle[device.handle] = left
        if self.numbers is not None:
            await self.numbers.disconnected(device)
        call_id = self.engine.call_of(device.device_id)
        rung = self.engine.ringing_members(call_id) if call_id is not None else None
        await self.apply(self.engine.device_disconnected(device.device_id))
        if call_id is not None and rung is not None:
            await self.members_left(call_id, *rung)

    def together(self, user_a: str, user_b: str) -> bool:
        """Are these two users the parties of a live call? (call-bound relaying asks this)"""
        if self.numbers is not None and self.numbers.together(user_a, user_b):
            return True
        return self.engine.together(user_a, user_b)

    # -- requests ----------------------------------------------------------------------------------

    async def receive(
        self, device: Device, message: m.ClientMessage, callee_exists: Callable[[str], bool]
    ) -> None:
        """Run one parsed client message through the engine and carry out what it asks."""
        numbers = self.numbers
        call_id = getattr(message, "call_id", None)
        if numbers is not None and isinstance(call_id, str) and numbers.owns(call_id):
            await numbers.receive(device, message)
            return
        if isinstance(message, m.Invite):
            await self._invite_user(device, message, callee_exists)
            return
        declines = isinstance(message, m.Reject | m.Hangup) and isinstance(call_id, str)
        rung = self.engine.ringing_members(str(call_id)) if declines else None
        effects = handle_message(self.engine, device.device_id, message)
        if isinstance(message, m.Answer):
            self._answer_relays(device, message, effects)
        await self.apply(effects)
        if rung is not None:
            await self.members_left(str(call_id), *rung)
        if isinstance(message, m.Answer | m.Candidate):
            self._after(device, message)

    def _after(self, device: Device, message: m.Answer | m.Candidate) -> None:
        """An accepted answer or candidate: note relays, or hand it to the call's anchor."""
        if self.engine.call_of(device.device_id) != message.call_id:
            return
        call = self.engine.anchored_call(message.call_id)
        if call is None:
            if message.call_id in self._relays_unwritten:  # no answered update carried them
                self._relays_unwritten.discard(message.call_id)
                known = self._relays.get(message.call_id)
                if known:
                    self.recorder.update(message.call_id, relay_candidates=list(known))
            return
        if self.anchoring is None:
            return
        if isinstance(message, m.Answer):
            if call.callee is not None and call.callee.device_id == device.device_id:
                self.anchoring.answered(message.call_id, message.sdp)
        else:
            party = Party.CALLER if device.device_id == call.caller.device_id else Party.CALLEE
            self.anchoring.candidate(message.call_id, party, message.candidate)

    def _answer_relays(self, device: Device, message: m.Answer, effects: Sequence[Effect]) -> None:
        """An accepted answer's relayed addresses (its relay sessions are linked by them), noted
        before its effects run so that the answered update writes them (`_update`)."""
        call_id = message.call_id
        accepted = any(
            isinstance(e, CdrUpdate)
            and e.call_id == call_id
            and e.answer_at is not None
            and e.callee_device == device.device_id
            for e in effects
        )
        if not accepted or self.engine.anchored_call(call_id) is not None:
            return  # a refused answer adds nothing to anyone's record; the anchor has its own
        known = self._relays.setdefault(call_id, [])
        known.extend(a for a in relay_candidates(message.sdp) if a not in known)
        self._relays_unwritten.add(call_id)

    # -- administration (admin API) ----------------------------------------------------------------

    def live_calls(self) -> list[LiveCall]:
        """The calls ringing or in progress right now."""
        now = self.clock.monotonic()
        calls = self.engine.live_calls()
        live = [live_call(call, now, self._relays.get(call.call_id)) for call in calls]
        if self.numbers is not None:  # calls to numbers, bridged by the SIP edge
            live = sorted([*live, *self.numbers.live_calls()], key=lambda c: c.invited_at)
        return live

    async def end_call(self, call_id: str, admin: str) -> bool:
        """End a live call as `admin` (reason ended-by-admin); False when it is not live."""
        effects = self.engine.end_by_admin(call_id, admin)
        if effects is None:
            return self.numbers is not None and await self.numbers.end_call(call_id, admin)
        await self.apply(effects)
        return True
