"""Per-user TURN limits from the groups a user is in (docs/policy.md, "Groups"): allocations at
once, a bandwidth cap per allocation, and extra peer ranges the user's allocations may reach.

The handler asks `UserLimitsLookup(user)` on the hot path, so the answer must come from memory:
`serve` keeps a snapshot loaded off the event loop and refreshed every few seconds
(policy/turn_limits.py). None means no group sets anything for the user: the server-wide
settings apply alone. A group limit only ever tightens the server-wide quota and bandwidth
(RFC 8656 §7.2 step 10 leaves quotas to the server); extra peer ranges widen `allow_peers` for
that user only, and `deny_peers` still wins over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callgate.turn.peers import PeerFilter


@dataclass(frozen=True, slots=True)
class UserLimits:
    max_allocations: int | None = None  # at once, for this user (0: none allowed)
    bytes_per_s: int | None = None  # per allocation, both directions
    peers: PeerFilter | None = None  # extra allowed peer ranges (deny_peers applied too)

    def allows_more(self, current: int) -> bool:
        return self.max_allocations is None or current < self.max_allocations

    def permits_peer(self, host: str) -> bool:
        return self.peers is not None and self.peers.permits_listed(host)


UserLimitsLookup = Callable[[str], UserLimits | None]


def tighter_rate(server_wide: int, group: int | None) -> int:
    """The bandwidth cap to apply (bytes/s, 0 = none): the lower of the two that are set."""
    if group is None:
        return server_wide
    return min(server_wide, group) if server_wide else group
