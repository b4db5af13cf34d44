"""Is the carrier there? OPTIONS pings to each trunk's `outbound` address (docs/sip.md, "Carrier
reachability").

RFC 3261 §11: an OPTIONS request asks a server what it supports without setting anything up;
every carrier answers it, which makes it the usual keep-alive between a PBX and its trunks. Every
`options_interval` seconds each trunk that takes our calls gets one (a non-INVITE client
transaction over UDP, §17.1.2, given up after PING_TIMEOUT). Any final response but a 5xx —
200, or a 401/405/404 from a carrier that wants digest or does not implement OPTIONS — proves
it is up (§11.2: it would answer an INVITE the same way); `options_failures` pings in a row
without one (no answer, or 5xx) mark it down, the next answer up again. Changes are logged and
audited (`sip.trunk.down`, `sip.trunk.up`).

The state feeds the dial plan (a down trunk is passed over for another that carries the number,
`Trunks.dial`), the console's Trunks page and `GET /api/trunks`, `/metrics`
(`callgate_sip_trunk_up`) and `/healthz` (`sip_trunks`, not critical: calls between users go on).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from callgate.clock import Clock
from callgate.sip.message import Headers, SipRequest, SipResponse
from callgate.sip.trunks import Trunk

log = logging.getLogger(__name__)

PING_TIMEOUT = 5.0  # seconds an OPTIONS waits for its answer (at most the interval)
Ping = Callable[[Trunk, float], Awaitable[SipResponse | None]]
Audit = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class TrunkHealth:
    up: bool | None = None  # None: not known yet
    failures: int = 0  # pings in a row without an answer that proves it up
    pings: int = 0
    answered: int = 0
    last_status: int | None = None  # the last answer's status (None: no answer)
    last_answer_at: float | None = None  # wall time
    rtt_s: float | None = None  # of the last answer


def options_request(trunk: Trunk, local: tuple[str, int], realm: str) -> SipRequest:
    """OPTIONS sip:HOST:PORT (§11.1) from us, over UDP from `local`."""
    assert trunk.outbound is not None
    host, port = trunk.outbound
    headers = Headers()
    branch = "z9hG4bK" + secrets.token_hex(8)
    headers.add("via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport")
    headers.add("max-forwards", "70")
    headers.add("from", f"<sip:callgate@{realm}>;tag={secrets.token_hex(6)}")
    headers.add("to", f"<sip:{host}:{port}>")
    headers.add("call-id", secrets.token_hex(12) + "@callgate")
    headers.add("cseq", "1 OPTIONS")
    headers.add("accept", "application/sdp")
    return SipRequest("OPTIONS", f"sip:{host}:{port}", headers)


def proves_up(reply: SipResponse | None) -> bool:
    """An answer, and not a 5xx (the carrier is there but not taking calls)."""
    return reply is not None and not 500 <= reply.status < 600


class TrunkPings:
    def __init__(self, trunks: tuple[Trunk, ...], ping: Ping, clock: Clock, audit: Audit) -> None:
        self._trunks = [t for t in trunks if t.outbound is not None and t.options_interval > 0]
        self._ping = ping
        self._clock = clock
        self._audit = audit
        self.health: dict[str, TrunkHealth] = {t.name: TrunkHealth() for t in self._trunks}

    def down(self, name: str) -> bool:
        """Known to be down (a trunk without pings, or not pinged yet, is not)."""
        health = self.health.get(name)
        return health is not None and health.up is False

    async def run(self) -> None:
        """Ping every trunk on its own interval until cancelled."""
        if self._trunks:
            await asyncio.gather(*(self._every(trunk) for trunk in self._trunks))

    async def _every(self, trunk: Trunk) -> None:
        while True:
            await self.ping(trunk)
            await asyncio.sleep(trunk.options_interval)

    async def ping(self, trunk: Trunk) -> None:
        health = self.health[trunk.name]
        started = self._clock.monotonic()
        try:
            reply = await self._ping(trunk, min(PING_TIMEOUT, trunk.options_interval))
        except OSError as exc:  # the socket refused to send: as good as no answer
            log.info("sip: OPTIONS to trunk %s not sent: %s", trunk.name, exc)
            reply = None
        health.pings += 1
        health.last_status = reply.status if reply is not None else None
        if proves_up(reply):
            health.answered += 1
            health.failures = 0
            health.last_answer_at = self._clock.wall()
            health.rtt_s = round(self._clock.monotonic() - started, 4)
            if health.up is not True:
                await self._changed(trunk, health, True)
            return
        health.failures += 1
        if health.failures >= trunk.options_failures and health.up is not False:
            await self._changed(trunk, health, False)

    async def _changed(self, trunk: Trunk, health: TrunkHealth, up: bool) -> None:
        was = health.up
        health.up = up
        if was is None and up:
            log.info("sip: trunk %s answers OPTIONS", trunk.name)
            return  # the first answer after start: nothing changed that anyone relied on
        state = "up" if up else "down"
        (log.info if up else log.warning)("sip: trunk %s is %s (OPTIONS)", trunk.name, state)
        details = {"failures": health.failures, "last_status": health.last_status}
        await self._audit("sip", f"sip.trunk.{state}", f"trunk:{trunk.name}", details)

    def summary(self) -> dict[str, Any]:
        """For /healthz, which answers anyone: counts, no names or addresses."""
        down = sum(1 for h in self.health.values() if h.up is False)
        return {"ok": down == 0, "critical": False, "pinged": len(self.health), "down": down}
