"""The TURN limits of each user, from the groups table, kept in memory for the relay's hot path.

`load()` reads every group that sets a TURN limit and every account's groups (two queries) and
swaps in a new user → `UserLimits` map; `serve` calls it off the event loop at start and then
every `REFRESH_S` seconds (`run()`), so a group change reaches the relay within that time. A user
in several groups gets the tightest allocation and bandwidth limits and the union of the peer
ranges. Limits apply to allocations made after the change; live ones keep theirs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from callgate.storage.db import Store
from callgate.storage.models import Group, User
from callgate.turn.handlers import TurnHandler
from callgate.turn.limits import UserLimits
from callgate.turn.peers import PeerFilter

log = logging.getLogger(__name__)
REFRESH_S = 2.0
KBPS_TO_BYTES = 125  # 1 kbit/s = 125 bytes/s


class GroupTurnLimits:
    def __init__(self, store: Store, deny_peers: Sequence[str] = ()) -> None:
        self._store = store
        self._deny = tuple(deny_peers)
        self._by_user: dict[str, UserLimits] = {}
        self._filters: dict[tuple[str, ...], PeerFilter] = {}

    def __call__(self, user: str) -> UserLimits | None:
        return self._by_user.get(user)

    def load(self) -> int:
        """Re-read the groups and memberships; how many users have limits."""
        with self._store.sessions() as session:
            groups = {g.name: g for g in session.scalars(select(Group))}
            members = session.execute(select(User.handle, User.groups)).all()
        by_user: dict[str, UserLimits] = {}
        for handle, names in members:
            limited = [groups[n] for n in json.loads(names) if n in groups]
            limits = self._combine(limited)
            if limits is not None:
                by_user[handle] = limits
        self._by_user = by_user
        return len(by_user)

    def _combine(self, groups: list[Group]) -> UserLimits | None:
        allocations = [g.turn_max_allocations for g in groups if g.turn_max_allocations is not None]
        kbps = [g.turn_max_kbps for g in groups if g.turn_max_kbps]
        ranges = tuple(sorted({r for g in groups for r in json.loads(g.turn_peer_ranges or "[]")}))
        if not allocations and not kbps and not ranges:
            return None
        return UserLimits(
            max_allocations=min(allocations, default=None),
            bytes_per_s=min(kbps) * KBPS_TO_BYTES if kbps else None,
            peers=self._filter(ranges) if ranges else None,
        )

    def _filter(self, ranges: tuple[str, ...]) -> PeerFilter:
        found = self._filters.get(ranges)
        if found is None:
            found = self._filters[ranges] = PeerFilter(ranges, self._deny)
        return found

    async def run(self, interval: float = REFRESH_S) -> None:
        """Refresh forever (cancel to stop); a failed read keeps the last snapshot."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.load)
            except SQLAlchemyError as exc:
                log.warning("could not refresh per-group TURN limits: %s", exc)


async def attach(
    store: Store, handler: TurnHandler, deny_peers: Sequence[str]
) -> asyncio.Task[None]:
    """Load the limits, hand them to the relay's handler, and keep them fresh (cancel the task
    to stop)."""
    limits = GroupTurnLimits(store, deny_peers)
    await asyncio.to_thread(limits.load)
    handler.user_limits = limits
    return asyncio.create_task(limits.run(), name="turn-group-limits")
