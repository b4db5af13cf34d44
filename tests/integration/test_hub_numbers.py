"""The hub hands calls to numbers, and every request about them, to its `numbers` (the SIP
trunks' dial-out, runtime/sip_numbers.py); calls to users stay with the engine; call-bound
relaying asks it too; the per-user call-attempt limit covers number calls as well; its live
calls are in the hub's (the admin API's) and an administrator ends them through the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callgate.signaling import messages as m
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.live import LiveCall
from callgate.storage.db import Store, open_store, sqlite_url
from tests.integration.hub_helpers import next_of, parse, running_hub

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class FakeNumbers:
    """Records what the hub hands over; owns the calls it acked."""

    def __init__(self, hub: SignalingHub) -> None:
        self.hub = hub
        self.invites: list[str] = []
        self.requests: list[str] = []
        self.gone: list[str] = []
        self.ended: list[tuple[str, str]] = []

    def owns(self, call_id: str) -> bool:
        return call_id == "pstn-1"

    def together(self, user_a: str, user_b: str) -> bool:
        return {user_a, user_b} == {"@pstn-pstn-1", "alice"}

    async def invite(self, device: Device, message: m.Invite) -> None:
        self.invites.append(message.to)
        self.hub.send(device, m.ack_message(message.id, call_id="pstn-1"))

    async def receive(self, device: Device, message: m.ClientMessage) -> None:
        self.requests.append(message.type)
        self.hub.send(device, m.ack_message(message.id))

    async def disconnected(self, device: Device) -> None:
        self.gone.append(device.handle)

    def live_calls(self) -> list[LiveCall]:
        if not self.invites or self.ended:
            return []
        at = datetime(2026, 1, 1, tzinfo=UTC)
        return [LiveCall("pstn-1", "alice", "+442079460000", "ringing", at, None, 1.0, None,
                         None, "uk")]  # fmt: skip

    async def end_call(self, call_id: str, admin: str) -> bool:
        if not self.owns(call_id):
            return False
        self.ended.append((call_id, admin))
        return True


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url(tmp_path / "data"))
    yield opened
    opened.close()


async def test_numbers_go_to_the_trunks_and_users_to_the_engine(store: Store) -> None:
    async with running_hub(store) as hub:
        numbers = FakeNumbers(hub)
        hub.numbers = numbers
        alice, _ = await hub.connect("alice", "Alice", False)
        await hub.receive(alice, parse({"type": "call.invite", "id": "1", "to": "+44 20 7946 0000",
                                        "sdp": OFFER}), lambda handle: True)  # fmt: skip
        assert (await next_of(alice, "ack"))["call_id"] == "pstn-1"
        await hub.receive(alice, parse({"type": "call.invite", "id": "2", "to": "tel:020 7946",
                                        "sdp": OFFER}), lambda handle: True)  # fmt: skip
        assert numbers.invites == ["+44 20 7946 0000", "tel:020 7946"]
        # the admin API's view: the number call is live, and ending it goes to its owner
        assert [(c.call_id, c.trunk) for c in hub.live_calls()] == [("pstn-1", "uk")]
        assert await hub.end_call("pstn-1", "root") and numbers.ended == [("pstn-1", "root")]
        assert not await hub.end_call("no-such-call", "root") and hub.live_calls() == []
        hangup = parse({"type": "call.hangup", "id": "3", "call_id": "pstn-1"})
        await hub.receive(alice, hangup, lambda handle: True)
        assert numbers.requests == ["call.hangup"]
        # a user's handle: the engine (bob is offline), not the trunks
        await hub.receive(alice, parse({"type": "call.invite", "id": "4", "to": "bob",
                                        "sdp": OFFER}), lambda handle: True)  # fmt: skip
        ended = await next_of(alice, "call.ended")
        assert ended["reason"] == "offline" and len(numbers.invites) == 2
        assert hub.together("alice", "@pstn-pstn-1") and not hub.together("bob", "@pstn-pstn-1")
        await hub.disconnect(alice)
        assert numbers.gone == ["alice"]


async def test_the_per_user_attempt_limit_covers_numbers(store: Store) -> None:
    async with running_hub(store) as hub:
        hub._attempt_rate = 1  # one attempt a minute for this test
        numbers = FakeNumbers(hub)
        hub.numbers = numbers
        alice, _ = await hub.connect("alice", "Alice", False)
        for request_id in ("1", "2"):
            invite = {"type": "call.invite", "id": request_id, "to": "+442079460000", "sdp": OFFER}
            await hub.receive(alice, parse(invite), lambda handle: True)
        assert (await next_of(alice, "error"))["code"] == m.RATE_LIMITED
        assert numbers.invites == ["+442079460000"]
