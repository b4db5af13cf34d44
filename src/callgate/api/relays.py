"""GET /api/relays' view of a TURN server running in this process."""

from __future__ import annotations

from callgate.api.deps import RelayStatus
from callgate.turn.server import TurnServer


def relay_status(server: TurnServer, name: str = "local") -> RelayStatus:
    """The server's live counters (relayed traffic folded in up to now)."""
    counters = server.live_counters()
    listen = [
        f"{kind.value} [{host}]:{port}" if ":" in host else f"{kind.value} {host}:{port}"
        for kind, (host, port) in server.bound
    ]
    return RelayStatus(
        name=name,
        listen=listen,
        allocations=counters.allocations_active,
        allocations_total=counters.allocations_total,
        bytes_in=counters.bytes_to_peer,
        bytes_out=counters.bytes_to_client,
        packets_in=counters.packets_to_peer,
        packets_out=counters.packets_to_client,
        auth_failures=counters.auth_failures,
        quota_rejections=counters.quota_rejections,
    )
