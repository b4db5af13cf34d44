"""Ending the sessions and calls of accounts the identity provider took away (SCIM: active
false, or deleted; LDAP: disabled or removed, found by the directory check; docs/identity.md).
Their tokens are revoked already, in the transaction that disabled them; this makes it take
effect at once instead of at the next token check of their signaling sockets (api/ws.py, every
15 s): their live calls end (reason ended-by-admin, by `actor`, "identity:scim" or
"identity:ldap") and their sockets close as unauthorized (4401).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from callgate.signaling.hub import SignalingHub

log = logging.getLogger(__name__)


def end_sessions(hub: SignalingHub, actor: str) -> Callable[[list[str]], Awaitable[None]]:
    async def end(handles: list[str]) -> None:
        gone = set(handles)
        for call in hub.live_calls():
            if call.caller in gone or call.callee in gone:
                await hub.end_call(call.call_id, actor)
                log.info("call %s ended: a party was deprovisioned (%s)", call.call_id, actor)
        for device in list(hub.devices.values()):
            if device.handle in gone:
                device.revoked = True
                with contextlib.suppress(Exception):  # a full queue: the token check closes it
                    device.queue.put_nowait(None)  # the writer closes the socket

    return end
