"""A bridged SIP call's watch on its party's RTP (runtime/sip_quiet.py), without sockets."""

from __future__ import annotations

import asyncio

from callgate.runtime.sip_quiet import media_stopped


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
