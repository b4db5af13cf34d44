"""How a SIP phone's side of a call with a user ends, as the hub records it (runtime/sip_calls.py
`_phone_gone`), without sockets: its BYE is its user's hang-up; a session timer that ran out, a
hold too long or an unacknowledged 2xx is the server's end, with that reason."""

from __future__ import annotations

from typing import Any, cast

import pytest

from callgate.runtime.sip_calls import SipCalls
from callgate.signaling.reasons import Reason


class Engine:
    def __init__(self) -> None:
        self.ended: list[tuple[str, Reason]] = []

    def end_call(self, call_id: str, reason: Reason, detail: str | None = None) -> list[Any]:
        self.ended.append((call_id, reason))
        return ["effects"]


class Hub:
    def __init__(self) -> None:
        self.engine = Engine()
        self.applied: list[list[Any]] = []
        self.received: list[Any] = []

    async def apply(self, effects: list[Any]) -> None:
        self.applied.append(effects)

    async def receive(self, device: Any, message: Any, user_exists: Any) -> None:
        self.received.append(message)


@pytest.mark.parametrize("why", ["session-expired", "hold-timeout", "party-lost"])
async def test_the_server_ended_it_for_the_phone(why: str) -> None:
    hub = Hub()
    calls = SipCalls(cast(Any, hub), lambda user: True, cast(Any, None))
    await calls._phone_gone(cast(Any, "device"), "call-1", why)
    assert hub.engine.ended == [("call-1", Reason(why))] and hub.applied == [["effects"]]
    assert hub.received == []  # not the phone user's hang-up


async def test_the_phone_hung_up() -> None:
    hub = Hub()
    calls = SipCalls(cast(Any, hub), lambda user: True, cast(Any, None))
    await calls._phone_gone(cast(Any, "device"), "call-1", "bye")
    assert hub.engine.ended == []
    (hangup,) = hub.received
    assert (hangup.type, hangup.call_id) == ("call.hangup", "call-1")
