"""What a signaling hub is given and what it holds: the parts wired in from other layers (as
`typing.Protocol`s: recording anchor, call policy, calls to numbers) and a connected `Device`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from callgate.signaling import messages as m
from callgate.signaling.live import LiveCall
from callgate.signaling.reasons import Party
from callgate.types.decisions import Denial, Grant


class AnchorHooks(Protocol):
    """Recorded calls (signaling/anchoring.py): the hub hands them over at these four points."""

    def begin(self, call_id: str, offer_sdp: str, rule: str | None) -> None: ...
    def answered(self, call_id: str, answer_sdp: str) -> None: ...
    def candidate(self, call_id: str, party: Party, candidate: m.IceCandidate) -> None: ...
    def ended(self, call_id: str) -> None: ...
    async def close(self) -> None: ...


class CallPolicy(Protocol):
    """Who may call whom (policy/store.py): a denial, or a grant with the call's constraints."""

    def verdict(
        self, caller: str, callee: str, at: datetime
    ) -> tuple[Denial | None, Grant | None]: ...


@runtime_checkable
class GroupPolicy(Protocol):
    """A policy that judges a ring group's members at once (policy/store.py `verdicts`); any
    other `CallPolicy` is asked member by member."""

    def verdicts(
        self, caller: str, callees: Sequence[str], at: datetime
    ) -> dict[str, tuple[Denial | None, Grant | None]]: ...


@runtime_checkable
class PairPolicy(Protocol):
    """A policy that judges several (caller, callee) pairs with one read (policy/store.py
    `verdict_pairs`: the invites of one lookup trip, signaling/lookups.py)."""

    def verdict_pairs(
        self, pairs: Sequence[tuple[str, str]], at: datetime
    ) -> list[tuple[Denial | None, Grant | None]]: ...


class NumberCalls(Protocol):
    """Calls to telephone numbers through a SIP trunk (runtime/sip_numbers.py): a `call.invite`
    whose `to` is a number (`is_number`), then every request naming such a call."""

    def owns(self, call_id: str) -> bool: ...

    def together(self, user_a: str, user_b: str) -> bool: ...

    async def invite(self, device: Device, message: m.Invite) -> None: ...

    async def receive(self, device: Device, message: m.ClientMessage) -> None: ...

    async def disconnected(self, device: Device) -> None: ...

    def live_calls(self) -> list[LiveCall]: ...

    async def end_call(self, call_id: str, admin: str) -> bool: ...


@dataclass(slots=True)
class Device:
    device_id: str
    handle: str
    queue: asyncio.Queue[dict[str, Any] | None]
    address: str | None = None  # the client's IP as the server saw it
    user_agent: str | None = None
    revoked: bool = False  # its account was taken away: the socket closes as unauthorized
