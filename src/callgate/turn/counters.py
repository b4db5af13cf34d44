"""Plain integer counters of the relay; metrics read them at scrape time.

Control-path counters are bumped where they happen. Relayed traffic is counted per allocation on
the hot path and folded into these totals by `TurnServer.live_counters()` (every scrape) and by the
once-a-second sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TurnCounters:
    allocations_total: int = 0
    allocations_active: int = 0
    # Relayed traffic: "to_peer" = client -> peer, "to_client" = peer -> client.
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    auth_failures: int = 0
    auth_throttled: int = 0  # requests refused (403) while their address or username is blocked
    peers_refused: int = 0
    malformed_dropped: int = 0
    quota_rejections: int = 0
    bandwidth_dropped: int = 0  # packets over an allocation's bandwidth cap
    send_dropped: int = 0  # packets the kernel refused (full socket buffer, TCP backlog)
    binding_requests: int = 0
    # Kernel fast path (turn/kernel): channel data it forwarded itself (both directions; also in
    # the relayed totals above), and datagrams it matched but left to userspace (expired, odd
    # length, no route).
    fast_path_packets: int = 0
    fast_path_passed: int = 0
    # Requests by method name ("allocate", "refresh", ...), answered with success or error.
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
