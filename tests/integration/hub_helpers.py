"""Driving a SignalingHub in-process: client messages as the socket would parse them, and waiting
for the next message of a kind on a device's queue."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from callgate.signaling import messages as m
from callgate.signaling.hub import Device


def parse(payload: dict[str, Any]) -> m.ClientMessage:
    return m.parse_client_message(json.dumps(payload))


async def next_of(device: Device, kind: str, timeout: float = 3) -> dict[str, Any]:
    """The next message of type `kind` sent to `device` (others are skipped)."""
    while True:
        message = await asyncio.wait_for(device.queue.get(), timeout)
        assert message is not None
        if message["type"] == kind:
            return message
