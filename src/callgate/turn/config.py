"""What a TURN server needs to know to run: listeners, relay range, auth, peer filter, quotas.

Built by `callgate.config` from the settings file, environment and CLI options; plain and frozen so
the server code never reads settings on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callgate.types import Address


@dataclass(frozen=True, slots=True)
class TurnConfig:
    # Each listener serves STUN/TURN over both UDP and TCP on the same host:port (port 0 = any).
    listen: tuple[Address, ...] = (("127.0.0.1", 3478),)
    # TLS listeners (TCP only), used when cert_file and key_file are set.
    tls_listen: tuple[Address, ...] = ()
    # The host name `serve` puts in `turns:` URLs (must match the certificate); None: the address.
    tls_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Address relay sockets bind to and advertise; None = the first listener's host.
    relay_ip: str | None = None
    # Optional IPv6 relay address (RFC 6156); None = no IPv6 allocations (440).
    relay_ip6: str | None = None
    relay_port_min: int = 49152
    relay_port_max: int = 65535
    realm: str = "callgate"
    # Static long-term users: name -> password (RFC 8489 §9.2).
    users: dict[str, str] = field(default_factory=dict)
    # TURN REST shared secret (coturn's use-auth-secret scheme); None disables REST credentials.
    auth_secret: str | None = None
    # CIDRs that open the default-deny peer filter (e.g. "127.0.0.0/8" for loopback tests).
    allow_peers: tuple[str, ...] = ()
    # CIDRs always refused, even if allowed above.
    deny_peers: tuple[str, ...] = ()
    # Call-bound relaying (turn/callbound.py): permissions only toward the relayed addresses of the
    # other party of a live, authorized call. Needs the signaling engine (`callgate serve`).
    call_bound: bool = False
    # Lifetimes in seconds (RFC 8656 §7.2, §9, §12).
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    nonce_lifetime: int = 600
    # Quotas (0 = unlimited); bandwidth in bytes per second per allocation, both directions.
    max_allocations_per_user: int = 10
    max_allocations_total: int = 0
    max_bandwidth_per_allocation: int = 0
    # Kernel fast path for channel data (turn/kernel): "off", "auto" (on when clang, libbpf and
    # the privileges allow, else off with a log line saying why) or "required" (start fails).
    fast_path: str = "auto"
    # SOFTWARE attribute value, or None to omit it.
    software: str | None = "callgate"
