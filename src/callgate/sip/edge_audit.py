"""The edge's audit entries, written off the event loop and bounded.

Entries the edge makes itself (registrations, refused dial-outs, forged in-dialog requests) go
straight to the log; those the call handlers ask for (a refused media address) are admitted at
most HANDLER_AUDITS a minute per actor and action (callgate/rate.py `Window`: the minute starts
at the actor's first entry), so a device or a trunk sending the same bad request in a loop
cannot flood the log (the rest are logged, not audited). At most MAX_COUNTED windows are kept:
past that, windows whose minute is over go, then the oldest one — never every actor's count at
once (a flooder's spent quota would start over).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from callgate.clock import Clock
from callgate.rate import Window
from callgate.records.audit import AuditLog
from callgate.sip.registrar import Binding

log = logging.getLogger(__name__)

HANDLER_AUDITS = 30  # entries a minute per actor and action from the call handlers
MINUTE = 60.0
MAX_COUNTED = 10_000  # (actor, action) windows kept at once


class EdgeAudit:
    def __init__(self, audit: AuditLog | None, clock: Clock, spawn: Callable[[Any], None]) -> None:
        self._audit = audit
        self._clock = clock
        self._spawn = spawn
        self._windows: dict[tuple[str, str], Window] = {}  # (actor, action) -> its minute

    async def append(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            await asyncio.to_thread(self._audit.append, actor, action, obj, details)
        except Exception:
            log.exception("sip: audit entry %s not written", action)

    def soon(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """`append` from code that cannot wait for it."""
        self._spawn(self.append(actor, action, obj, details))

    async def binding(self, action: str, binding: Binding) -> None:
        """A registration event of a phone (`sip.register`, `sip.unregister`, ...)."""
        details = {
            "device": binding.username,
            "transport": binding.peer.transport,
            "address": f"{binding.peer.address[0]}:{binding.peer.address[1]}",
        }
        await self.append(f"sip:{binding.username}", action, f"user:{binding.handle}", details)

    async def handler(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """An entry a call handler asks for, if under HANDLER_AUDITS this minute."""
        if self._admits(actor, action):
            await self.append(actor, action, obj, details)

    def handler_soon(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        if self._admits(actor, action):
            self.soon(actor, action, obj, details)

    def _admits(self, actor: str, action: str) -> bool:
        """At most HANDLER_AUDITS in any window of a minute from the actor's first entry (a
        `Window`, callgate/rate.py: a run across a minute's boundary gets no second quota)."""
        now = self._clock.monotonic()
        key = (actor, action)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= MAX_COUNTED:  # bounded: drop windows that are over
                self._windows = {
                    k: w for k, w in self._windows.items() if w.start is not None
                    and now - w.start < MINUTE
                }  # fmt: skip
                if len(self._windows) >= MAX_COUNTED:
                    # all live: forget the oldest only (the first made, insertion order), not
                    # every actor's count — a flooder's included
                    del self._windows[next(iter(self._windows))]
            window = self._windows[key] = Window(MINUTE)
        count = window.hit(now)
        if count > HANDLER_AUDITS:
            log.info("sip: %s by %s not audited (over %d a minute)", action, actor, HANDLER_AUDITS)
        return count <= HANDLER_AUDITS
