"""How a SIP phone's side of a call with a user ends, as the hub records it (runtime/sip_calls.py
`_phone_gone`), without sockets: its BYE is its user's hang-up; a session timer that ran out, a
hold too long or an unacknowledged 2xx is the server's end, with that reason."""

from __future__ import annotations

import asyncio
import contextlib
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


class HeldCall:
    """A phone holding the call (`held_since` long past) whose BYE transaction takes a while:
    `hang_up` marks the call ended at once, as `Dialog.hang_up` does, then awaits the BYE."""

    def __init__(self) -> None:
        self.held_since: float | None = 0.0
        self.ended = asyncio.Event()
        self.answered = asyncio.Event()
        self.byes: list[str] = []
        self.finished = False

    async def probe(self) -> int | None:
        return 200

    async def hang_up(self, why: str = "") -> None:
        self.byes.append(why)
        self.ended.set()  # the call's end: its `_follow`/`_talk` cancels `holding` now
        await self.answered.wait()  # the BYE's client transaction, retransmitting
        self.finished = True


async def test_a_held_calls_bye_outlives_the_cancel_of_its_holding_task() -> None:
    """Ending a call held too long: the call's end cancels `_end_held`'s task, but not the BYE's
    transaction (else one UDP BYE, never retransmitted); `close` lets it finish."""
    calls = SipCalls(cast(Any, Hub()), lambda user: True, cast(Any, None), max_hold_s=0.0)
    call = HeldCall()
    holding = asyncio.create_task(calls._end_held(cast(Any, call), cast(Any, call)))
    await asyncio.wait_for(call.ended.wait(), 10)
    holding.cancel()  # as `_follow`'s finally does once the call ended
    with contextlib.suppress(asyncio.CancelledError):
        await holding
    assert call.byes == ["hold-timeout"] and not call.finished
    (bye,) = calls._byes
    assert not bye.done()  # still in its transaction
    call.answered.set()
    await asyncio.wait_for(calls.close(), 10)
    assert call.finished and not calls._byes
