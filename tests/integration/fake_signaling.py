"""An in-memory stand-in for the signaling server: two or more endpoints, one call at a time.

Each endpoint implements `SignalingChannel` (request / next_event) like SignalingClient, and the
relay passes call messages between them the way docs/signaling.md says, recording every request
so tests can check what the clients reported (`call.media`, `call.stats`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from callgate.client.errors import SignalingError
from callgate.turn.auth import rest_credentials
from tests.conftest import AUTH_SECRET


def hello_for(user: str, turn: tuple[str, int]) -> dict[str, Any]:
    """The hello the server sends: our TURN with REST credentials, relay-only."""
    username, password = rest_credentials(AUTH_SECRET, user, 600, time.time())
    return {
        "type": "hello",
        "protocol": 1,
        "user": {"handle": user, "display_name": user},
        "device_id": f"{user}-1",
        "ice_servers": [
            {
                "urls": [f"turn:{turn[0]}:{turn[1]}?transport=udp"],
                "username": username,
                "credential": password,
            }
        ],
        "ice_transport_policy": "relay",
        "limits": {"max_message_bytes": 65536, "max_sdp_bytes": 16384},
    }


class FakeEndpoint:
    def __init__(self, relay: FakeRelay, handle: str) -> None:
        self.relay = relay
        self.handle = handle
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def request(
        self, type: str, /, *, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        message = {"type": type, **fields}
        self.sent.append(message)
        return await self.relay.handle(self, message)

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    def of_type(self, type: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == type]


class FakeRelay:
    def __init__(self) -> None:
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.calls: dict[str, tuple[FakeEndpoint, FakeEndpoint]] = {}
        self._ids = itertools.count(1)

    def endpoint(self, handle: str) -> FakeEndpoint:
        self.endpoints[handle] = FakeEndpoint(self, handle)
        return self.endpoints[handle]

    async def handle(self, sender: FakeEndpoint, message: dict[str, Any]) -> dict[str, Any]:
        kind = message["type"]
        if kind == "call.invite":
            callee = self.endpoints.get(message["to"])
            if callee is None:
                raise SignalingError("not-found", "no such user")
            call_id = f"call-{next(self._ids)}"
            self.calls[call_id] = (sender, callee)
            callee.events.put_nowait(
                {
                    "type": "call.incoming",
                    "call_id": call_id,
                    "from": {"handle": sender.handle, "display_name": sender.handle},
                    "sdp": message["sdp"],
                }
            )
            sender.events.put_nowait({"type": "call.ringing", "call_id": call_id, "devices": 1})
            return {"type": "ack", "call_id": call_id}
        if kind == "ping":
            return {"type": "ack"}
        call = self.calls.get(message.get("call_id", ""))
        if call is None or sender not in call:
            raise SignalingError("not-found", "no such call")
        caller, callee = call
        if kind == "call.answer":
            caller.events.put_nowait(
                {"type": "call.answered", "call_id": message["call_id"], "sdp": message["sdp"]}
            )
        elif kind in ("call.hangup", "call.reject"):
            reason = "hangup" if kind == "call.hangup" else "rejected"
            ended_by = "caller" if sender is caller else "callee"
            for side in call:
                side.events.put_nowait(
                    {
                        "type": "call.ended",
                        "call_id": message["call_id"],
                        "reason": reason,
                        "ended_by": ended_by,
                    }
                )
        return {"type": "ack"}
