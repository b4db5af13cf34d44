"""The end of a bridged call whose SIP party is gone (docs/sip.md, "Calls to numbers"): a party
that stops sending RTP for `calls.silence_timeout` seconds, as the hub's watchdog ends calls
between users (`media-lost`). A phone that vanished without BYE, or whose BYE never got
through, then no longer keeps the call (and a dialled-out call's carrier leg) up forever.

A held party sends nothing and its silence is filled in (media/caller_fill.py), so neither this
watch nor the recorder's silence limit can tell a held phone from one that lost power. So while a
party holds the call it is asked every 30 s whether the dialog still exists (OPTIONS in the
dialog, RFC 3261 §11): no answer (Timer F), `408` or `481` (RFC 5057 §5.1: the dialog is gone)
ends the call `party-lost`; and a hold lasts at most `calls.max_hold_s`, then `hold-timeout`
(`hold_over`)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from callgate.signaling.reasons import Reason

MEDIA_LOST = Reason.MEDIA_LOST.value  # the CDR reason of a call whose media stopped
HOLD_TIMEOUT = Reason.HOLD_TIMEOUT.value  # ... of one a party held longer than `max_hold_s`
PARTY_LOST = Reason.PARTY_LOST.value  # ... of one whose holding party stopped answering
PROBE_EVERY = 30.0  # s: how often a holding party is asked (OPTIONS)
GONE = (408, 481)  # its answers that mean the dialog is gone (RFC 5057 §5.1)


class Receiving(Protocol):
    @property
    def received(self) -> int: ...  # packets taken from the party so far (RtpLeg)


class Filling(Protocol):
    filled: int  # silence packets sent for the party (media/caller_fill.py)


class Holding(Protocol):
    @property
    def held_since(self) -> float | None: ...  # loop time the party's hold began, or None


class Probing(Protocol):
    async def probe(self) -> int | None: ...  # OPTIONS in the dialog: its status, None: none


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


async def hold_over(
    max_s: float, *parties: tuple[Holding, Probing], every: float = PROBE_EVERY
) -> str:
    """Returns why a party's hold ends the call (module doc): `party-lost` once a party holding
    it (`fill`) no longer answers OPTIONS in its dialog (`call`), `hold-timeout` once one has
    held it, without resuming, for `max_s` seconds."""
    loop = asyncio.get_running_loop()
    asked = [0.0] * len(parties)  # loop time each party was last asked
    while True:
        for n, (fill, call) in enumerate(parties):
            since = fill.held_since
            if since is None:
                continue
            if loop.time() - since >= max_s:
                return HOLD_TIMEOUT
            if loop.time() - max(since, asked[n]) >= every:
                asked[n] = loop.time()
                status = await call.probe()
                if status is None or status in GONE:
                    return PARTY_LOST
        await asyncio.sleep(min(1.0, every))
