"""Relay accounting events and the sink seam they are delivered through.

The server emits one event per allocation lifecycle step; sinks (database recorder, metrics, tests)
receive them synchronously and must not block: a sink that does I/O queues the event and writes it
off the data path.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from callgate.types import Address, Transport


class EventKind(enum.Enum):
    CREATED = "created"
    REFRESHED = "refreshed"
    PERMISSION = "permission"
    CHANNEL = "channel"
    # Traffic counters so far, every few seconds while they grow: a crash loses at most that much.
    PROGRESS = "progress"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class AllocationEvent:
    kind: EventKind
    allocation_id: str  # unique per allocation (uuid4 hex)
    username: str  # as authenticated; for REST credentials the "<expiry>:<user>" string
    user: str  # the user part (REST: after the colon; static: the name)
    client: Address
    server: Address
    transport: Transport
    relay: Address
    time: float  # wall clock, Unix seconds
    started: float  # wall clock of allocation creation
    lifetime: int  # seconds granted (0 on deletion)
    peers: tuple[str, ...]  # peer IPs with permission so far
    packets_to_peer: int
    bytes_to_peer: int
    packets_to_client: int
    bytes_to_client: int
    end_reason: str | None = None  # on DELETED: "refresh-0", "expired", "server-shutdown", ...
    detail: str | None = None  # e.g. the peer IP of a PERMISSION event, the channel of CHANNEL


class EventSink(Protocol):
    def emit(self, event: AllocationEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class AuthThrottled:
    """Failed authentications from one address or for one username started a block
    (turn/throttle.py): one summary per block, never one per packet."""

    scope: str  # "address" or "username"
    key: str  # the client IP, or the username tried
    failures: int  # failed attempts since the key was last quiet
    refused: int  # requests refused during the previous block
    blocked_s: float
    strike: int
    time: float  # wall clock, Unix seconds
    last_address: str  # the source of the failure that started the block
    last_username: str  # the username it tried


class AuthEventSink(Protocol):
    """Where the relay reports throttled authentication (the audit log, with `serve`)."""

    def auth_throttled(self, event: AuthThrottled) -> None: ...


class NullSink:
    def emit(self, event: AllocationEvent) -> None:
        return None


class ListSink:
    """Collects events in memory (tests, diagnostics)."""

    def __init__(self) -> None:
        self.events: list[AllocationEvent] = []

    def emit(self, event: AllocationEvent) -> None:
        self.events.append(event)


class FanoutSink:
    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, event: AllocationEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)
