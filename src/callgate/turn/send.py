"""A Send indication's data to its peer (RFC 8656 §11.2): the one rule both readers apply, the
UDP listener's fast reader (turn/protocol.py) and every other transport (turn/handlers.py).

Indications are never answered (RFC 8656 §11.2): a malformed one is dropped and counted; without
an allocation, or without a permission, the data is discarded. In call-bound mode the data goes
only to admitted peers: permissions are per IP and every allocation here shares the relay IP
(turn/callbound.py).
"""

from __future__ import annotations

from callgate.stun.message import StunDecodeError
from callgate.turn.allocation import Allocation
from callgate.turn.callbound import may_send
from callgate.turn.counters import TurnCounters
from callgate.turn.indications import parse_send


def relay_send_indication(
    packet: bytes | memoryview,
    allocation: Allocation | None,
    call_bound: bool,
    counters: TurnCounters,
) -> None:
    """Relay the Send indication `packet` from the client whose allocation is `allocation`."""
    try:
        peer, payload = parse_send(packet)
    except StunDecodeError:
        counters.malformed_dropped += 1
        return
    if allocation is None:
        return
    if call_bound and not may_send(allocation, peer):
        counters.peers_refused += 1
        return
    allocation.to_peer(payload, peer)
