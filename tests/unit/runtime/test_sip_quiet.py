"""A bridged SIP call's watch on its party's RTP (runtime/sip_quiet.py), without sockets."""

from __future__ import annotations

import asyncio

import pytest

from callgate.runtime.sip_quiet import Heard, hold_over, media_stopped


class Leg:
    received = 0


async def test_a_party_that_stops_sending_is_noticed_one_that_sends_is_not() -> None:
    leg = Leg()
    watch = asyncio.ensure_future(media_stopped(leg, 0.2))
    for _ in range(40):  # 0.8 s of packets every 10 ms: more often than the watch looks
        leg.received += 1
        await asyncio.sleep(0.01)
        assert not watch.done()
    await asyncio.wait_for(watch, 30)  # then nothing: it returns


class Fill:
    filled = 0


async def test_a_held_party_is_heard_by_the_silence_filled_in_for_it() -> None:
    """A phone that holds the call sends nothing, and the silence filled in for it (runtime/
    sip_reoffers.py) counts as its media: the watch does not end the held call; once neither
    flows, it does."""
    leg, fill = Leg(), Fill()
    leg.received = 5
    watch = asyncio.ensure_future(media_stopped(Heard(leg, fill), 1.0))
    for _ in range(40):  # held: only silence, every 10 ms
        fill.filled += 1
        await asyncio.sleep(0.01)
        assert not watch.done()
    await asyncio.wait_for(watch, 30)


class Held:
    def __init__(self, since: float | None, answers: list[int | None] | None = None) -> None:
        self.held_since = since
        self.answers = answers or []  # its answers to our OPTIONS, in turn (then 200)
        self.asked = 0

    async def probe(self) -> int | None:
        self.asked += 1
        return self.answers.pop(0) if self.answers else 200


async def test_a_hold_longer_than_max_hold_s_is_noticed_a_resumed_one_is_not() -> None:
    """A phone that holds the call and then loses power is not noticed by any media watch
    (its silence is filled in): `max_hold_s` bounds the hold, whichever party holds; a party
    that never held is never asked."""
    now = asyncio.get_running_loop().time()
    never, long = Held(None), Held(now - 3601)
    assert await asyncio.wait_for(hold_over(3600, (never, never), (long, long)), 30) == (
        "hold-timeout"
    )
    held = Held(now - 3590)
    watch = asyncio.ensure_future(hold_over(3600, (never, never), (held, held)))
    await asyncio.sleep(0.2)  # held, but not yet for an hour
    assert not watch.done() and never.asked == 0
    watch.cancel()


@pytest.mark.parametrize("gone", [None, 408, 481])
async def test_a_holding_party_that_stops_answering_is_lost(gone: int | None) -> None:
    """While it holds the call it is asked (OPTIONS) every `every` s: any answer but 408/481
    (RFC 5057 §5.1) keeps the call; none, 408 or 481 ends it `party-lost`."""
    now = asyncio.get_running_loop().time()
    held = Held(now, [200, 405, gone])  # 405: OPTIONS not allowed, but the dialog is there
    why = await asyncio.wait_for(hold_over(3600, (held, held), every=0.01), 30)
    assert why == "party-lost" and held.asked == 3
