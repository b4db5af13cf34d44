"""A bridged SIP call's watch on its party's RTP (runtime/sip_quiet.py), without sockets."""

from __future__ import annotations

import asyncio

from callgate.runtime.sip_quiet import Heard, held_too_long, media_stopped


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
    def __init__(self, since: float | None) -> None:
        self.held_since = since


async def test_a_hold_longer_than_max_hold_s_is_noticed_a_resumed_one_is_not() -> None:
    """A phone that holds the call and then loses power is not noticed by any media watch
    (its silence is filled in): `max_hold_s` bounds the hold, whichever party holds."""
    now = asyncio.get_running_loop().time()
    await asyncio.wait_for(held_too_long(3600, Held(None), Held(now - 3601)), 30)
    watch = asyncio.ensure_future(held_too_long(3600, Held(None), Held(now - 3590)))
    await asyncio.sleep(0.2)  # held, but not yet for an hour; the other party never held
    assert not watch.done()
    watch.cancel()
