"""The periodic check of open signaling sockets' tokens, all sockets in one go.

A socket stays open only while its bearer token stays valid: revoked, expired or an account
disabled closes it within one period (docs/security.md). Checking each socket on its own costs a
worker-thread trip and a query per socket per period — for 10,000 idle devices, hundreds of
queries a second. Here one task per server checks every open socket's token each period in one
trip (`valid_tokens`: a query per few hundred tokens) and closes the sockets whose token failed.
The task runs only while sockets are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection

log = logging.getLogger(__name__)

ValidTokens = Callable[[Collection[str]], set[str]]
Close = Callable[[], Awaitable[None]]


class TokenWatch:
    def __init__(self, valid_tokens: ValidTokens, period: float) -> None:
        self._valid_tokens = valid_tokens
        self._period = period
        self._open: dict[str, tuple[str, Close]] = {}  # socket key -> (token, how to close it)
        self._task: asyncio.Task[None] | None = None

    def watch(self, key: str, token: str, close: Close) -> None:
        """Check `token` every period while socket `key` is open; `close()` it when it fails."""
        self._open[key] = (token, close)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ws-token-watch")

    def forget(self, key: str) -> None:
        self._open.pop(key, None)

    async def _run(self) -> None:
        while self._open:
            await asyncio.sleep(self._period)
            watched = dict(self._open)
            if not watched:
                return
            tokens = {token for token, _ in watched.values()}
            try:
                valid = await asyncio.to_thread(self._valid_tokens, tokens)
            except Exception:
                # The accounts are unreadable (database down): keep the sockets, check again.
                log.exception("checking %d signaling tokens failed", len(tokens))
                continue
            closing = [
                close
                for key, (token, close) in watched.items()
                if token not in valid and self._open.pop(key, None) is not None
            ]
            for close in closing:
                with contextlib.suppress(Exception):
                    await close()
