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
