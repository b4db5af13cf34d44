"""The end of a bridged call whose SIP party is gone (docs/sip.md, "Calls to numbers"): a party
that stops sending RTP for `calls.silence_timeout` seconds, as the hub's watchdog ends calls
between users (`media-lost`). A phone that vanished without BYE, or whose BYE never got
through, then no longer keeps the call (and a dialled-out call's carrier leg) up forever.

A held party sends nothing and its silence is filled in (media/caller_fill.py), so neither this
watch nor the recorder's silence limit can tell a held phone from one that lost power: a hold
lasts at most `calls.max_hold_s` (`held_too_long`), then the call ends `hold-timeout`."""

from __future__ import annotations

import asyncio
from typing import Protocol

from callgate.signaling.reasons import Reason

MEDIA_LOST = Reason.MEDIA_LOST.value  # the CDR reason of a call whose media stopped
HOLD_TIMEOUT = Reason.HOLD_TIMEOUT.value  # ... of one a party held longer than `max_hold_s`


class Receiving(Protocol):
    @property
    def received(self) -> int: ...  # packets taken from the party so far (RtpLeg)


class Filling(Protocol):
    filled: int  # silence packets sent for the party (media/caller_fill.py)


class Holding(Protocol):
    @property
    def held_since(self) -> float | None: ...  # loop time the party's hold began, or None


class Heard:
    """What a party sent (`leg`), or the silence filled in while it holds the call (`fill`,
    runtime/sip_reoffers.py): a held call is not a vanished party."""

    def __init__(self, leg: Receiving, fill: Filling) -> None:
        self._leg, self._fill = leg, fill

    @property
    def received(self) -> int:
        return self._leg.received + self._fill.filled


async def media_stopped(leg: Receiving, quiet_s: float) -> None:
    """Returns once `leg` has received no packet for `quiet_s` seconds."""
    loop = asyncio.get_running_loop()
    seen, since = leg.received, loop.time()
    while True:
        await asyncio.sleep(min(1.0, quiet_s / 4))
        now = loop.time()
        if leg.received != seen:
            seen, since = leg.received, now
        elif now - since >= quiet_s:
            return


async def held_too_long(max_s: float, *fills: Holding) -> None:
    """Returns once a party (its `fill`) has held the call, without resuming, for `max_s` s."""
    loop = asyncio.get_running_loop()
    while True:
        since = [f.held_since for f in fills if f.held_since is not None]
        left = min(since) + max_s - loop.time() if since else max_s
        if left <= 0:
            return
        await asyncio.sleep(min(left, 1.0))
