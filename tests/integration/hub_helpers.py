"""Driving a SignalingHub in-process: a running hub on a store, client messages as the socket would
parse them, and waiting for the next message of a kind on a device's queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from callgate.clock import SystemClock
from callgate.records.cdr import CdrRepository
from callgate.records.quality_store import QualityRepository
from callgate.signaling import messages as m
from callgate.signaling.engine import CallEngine
from callgate.signaling.hub import CallPolicy, Device, SignalingHub
from callgate.storage.db import Store


@contextlib.asynccontextmanager
async def running_hub(
    store: Store, policy: CallPolicy | None = None, **timeouts: Any
) -> AsyncIterator[SignalingHub]:
    """A started hub writing to `store` on the system clock, relay sessions not linked;
    `timeouts` go to the CallEngine (ring_timeout=…, relay_addresses=…)."""
    engine = CallEngine(SystemClock(), **timeouts)
    hub = SignalingHub(
        engine,
        CdrRepository(store),
        QualityRepository(store.sessions),
        SystemClock(),
        link_delays=(),
        policy=policy,
    )
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def parse(payload: dict[str, Any]) -> m.ClientMessage:
    return m.parse_client_message(json.dumps(payload))


async def next_of(device: Device, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next message of type `kind` sent to `device` (others are skipped); the deadline is
    generous (a loaded machine), the happy path returns as soon as the message is queued."""
    while True:
        message = await asyncio.wait_for(device.queue.get(), timeout)
        assert message is not None
        if message["type"] == kind:
            return message
