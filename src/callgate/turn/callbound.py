"""Call-bound relaying: a TURN allocation may reach only the relay addresses of the other party of
an authorized, live call (docs/design.md, "Peer filter"). With it the relay is never an open proxy,
not even between two users of the same company who are not talking to each other.

RFC 8656 §9 installs permissions per peer IP address, and every allocation of this server shares
the relay IP. So the check is made on the full transport address when a permission or channel is
asked for (`admit`), Send indications are held to the admitted addresses (`may_send`), and the
once-a-second sweep withdraws what a call that ended no longer justifies (`withdraw_stale`).
ChannelData needs no check: a channel is bound to one admitted address.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from callgate.turn.allocation import Allocation
from callgate.types import Address

# (user of the allocation, user owning the peer's relayed address) -> are they in a live call?
CallGuard = Callable[[str, str], bool]


def admit(
    guard: CallGuard, by_relay: Mapping[Address, Allocation], allocation: Allocation, peer: Address
) -> bool:
    """May `allocation` install a permission or channel toward `peer`? Remembers it if so."""
    owner = by_relay.get(peer)
    if owner is None or owner is allocation or not guard(allocation.user, owner.user):
        return False
    if allocation.call_peers is None:
        allocation.call_peers = set()
    allocation.call_peers.add(peer)
    return True


def may_send(allocation: Allocation, peer: Address) -> bool:
    """Send indications in call-bound mode go only to admitted peers (permissions are per IP)."""
    peers = allocation.call_peers
    return peers is not None and peer in peers


def withdraw_stale(
    guard: CallGuard, by_relay: Mapping[Address, Allocation], allocations: list[Allocation]
) -> int:
    """Drop admitted peers whose call has ended (or whose allocation is gone), with their channels
    and — when no admitted peer remains on that IP — their permission. Returns how many."""
    withdrawn = 0
    for allocation in allocations:
        peers = allocation.call_peers
        if not peers:
            continue
        stale = [
            peer
            for peer in peers
            if (owner := by_relay.get(peer)) is None or not guard(allocation.user, owner.user)
        ]
        for peer in stale:
            peers.discard(peer)
            allocation.unbind_peer(peer)
            withdrawn += 1
        kept_ips = {host for host, _port in peers}
        for host in {host for host, _port in stale} - kept_ips:
            allocation.permissions.pop(host, None)
    return withdrawn
