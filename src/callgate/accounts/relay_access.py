"""Disabled accounts lose the relay within seconds: their TURN REST credentials (valid up to
`calls.credential_ttl` after `hello`) are refused and their allocations ended.

`serve` reads the disabled handles at start and then every `REFRESH_S` seconds (one query on the
users table) and hands the set to the relay, whichever process disabled the account (the API, or
`callgate user disable` on the store). A separate `callgate turn` relay sharing the REST secret has
no store and does not learn of it: its credentials run to their expiry.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from callgate.storage.db import Store
from callgate.storage.models import User
from callgate.turn.server import TurnServer

log = logging.getLogger(__name__)
REFRESH_S = 1.0


class DisabledAccounts:
    def __init__(self, store: Store, server: TurnServer) -> None:
        self._store = store
        self._server = server

    def load(self) -> frozenset[str]:
        with self._store.sessions() as session:
            query = select(User.handle).where(User.disabled.is_(True))
            return frozenset(session.scalars(query))

    async def apply(self) -> None:
        """Read the disabled handles and make the relay refuse them."""
        self._server.refuse_users(await asyncio.to_thread(self.load))

    async def run(self, interval: float = REFRESH_S) -> None:
        """Refresh forever (cancel to stop); a failed read keeps the last set."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.apply()
            except SQLAlchemyError as exc:
                log.warning("could not refresh the disabled accounts for the relay: %s", exc)
