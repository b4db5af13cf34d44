"""Disabled and removed accounts lose the relay within seconds: their TURN REST credentials
(valid up to `calls.credential_ttl` after `hello`) are refused and their allocations ended.

`serve` reads them at start and then every `REFRESH_S` seconds and hands them to the relay,
whichever process made the change (the API, or `callgate user …` on the store): the disabled
handles from the users table, and the removed ones from the audit log's `user.delete` entries of
the last credential lifetime (no account has that handle now). A separate `callgate turn` relay
sharing the REST secret has no store and does not learn of either: its credentials run to their
expiry.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from callgate.storage.db import Store
from callgate.storage.models import AuditEntry, User
from callgate.turn.server import TurnServer

log = logging.getLogger(__name__)
REFRESH_S = 1.0


class DisabledAccounts:
    def __init__(self, store: Store, server: TurnServer, credential_ttl: float) -> None:
        self._store = store
        self._server = server
        self._window = timedelta(seconds=credential_ttl)

    def load(self) -> tuple[frozenset[str], frozenset[str]]:
        """(disabled handles, handles removed within the credential lifetime)."""
        since = datetime.now(UTC) - self._window
        with self._store.sessions() as session:
            disabled = frozenset(
                session.scalars(select(User.handle).where(User.disabled.is_(True)))
            )
            deletions = select(AuditEntry.object).where(
                AuditEntry.action == "user.delete", AuditEntry.at >= since
            )
            deleted = {o.removeprefix("user:") for o in session.scalars(deletions)}
            if not deleted:
                return disabled, frozenset()
            again = session.scalars(select(User.handle).where(User.handle.in_(deleted)))
            return disabled, frozenset(deleted - set(again))

    async def apply(self) -> None:
        """Read the disabled and removed handles and make the relay refuse them."""
        disabled, removed = await asyncio.to_thread(self.load)
        self._server.refuse_users(disabled, removed)

    async def run(self, interval: float = REFRESH_S) -> None:
        """Refresh forever (cancel to stop); a failed read keeps the last set."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.apply()
            except SQLAlchemyError as exc:
                log.warning("could not refresh the disabled accounts for the relay: %s", exc)
