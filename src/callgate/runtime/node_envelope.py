"""Every message between signaling nodes is signed, fresh and used once (docs/scaling.md, "Trust").

The hub hands the bus plain JSON objects (signaling/cluster.py lists them); the bus wraps each
one here before it publishes it on `callgate:node:{to}` and unwraps what it receives before the
hub sees any field. One envelope for every kind of message, sealed with the node key
(runtime/cluster_seal.py, kind "msg"):

    cg1.<hex HMAC-SHA256>.<JSON {"at": unix seconds,
                                 "data": {"from": NODE, "boot": HEX, "seq": N, "msg": {…}}}>

- the MAC covers the whole body and names the recipient (the seal's subject), so a message to
  node b is no message to node c; it is checked in constant time before any field is read;
- `at`: a message more than MAX_AGE seconds old (or SKEW in the future) is refused as stale;
- `boot` (random, drawn at each start of the sender) and `seq` (counting up per recipient):
  the receiver remembers, per sender and boot, the highest sequence number and which of the
  WINDOW numbers below it it has seen (an anti-replay window, as IPsec's, RFC 4303 §3.4.3). A
  message seen before, or older than the window, is refused as replayed. A boot is forgotten
  once the newest `at` seen from it is more than MAX_AGE old: any message of it is stale by
  then (judged by the messages' own times, not by how long the receiver heard nothing);
- a message stamped before the receiver started is refused (`before-start`): it was meant for
  the receiver's previous life, whose replay windows are gone;
- the receiver judges ages by the latest wall-clock time it has seen, so a clock stepped back
  does not make an old message fresh again (it refuses messages, as stale, until its clock has
  caught up again).

Refused messages (oversized, unsigned, forged, malformed, stale, replayed, signed with a relay's
key) are
counted per reason (`ClusterSeal.refusals`, `callgate_cluster_refused_total` on /metrics) and
logged at most once a minute per reason, never their content nor the key.
"""

from __future__ import annotations

import secrets
from typing import Any

from callgate.runtime.cluster_seal import ClusterSeal

KIND = "msg"
MAX_AGE = 15.0  # seconds a message is believed: it is about a call ringing or live now
WINDOW = 4096  # sequence numbers remembered below the highest (out-of-order delivery)
MAX_BOOTS = 10_000  # senders' lives remembered at once (only authenticated ones count)
MAX_BOOT_CHARS = 64
MAX_BYTES = 1 << 20  # a larger message is refused before its MAC is computed
_FULL = (1 << WINDOW) - 1


class ReplayWindow:
    """The sequence numbers of one sender's life seen so far: the highest, and a bit per number
    in the WINDOW below it (bit i: highest - i seen)."""

    __slots__ = ("mask", "top")

    def __init__(self) -> None:
        self.top = -1
        self.mask = 0

    def first_time(self, seq: int) -> bool:
        """True (and `seq` remembered) if `seq` was not seen and is not below the window."""
        if seq > self.top:
            ahead = seq - self.top
            self.mask = (self.mask << ahead | 1) & _FULL if ahead < WINDOW else 1
            self.top = seq
            return True
        behind = self.top - seq
        if behind >= WINDOW or self.mask >> behind & 1:
            return False
        self.mask |= 1 << behind
        return True


class NodeEnvelope:
    """Wrap this node's messages to other nodes, and unwrap (or refuse) theirs."""

    def __init__(self, seal: ClusterSeal, node_id: str) -> None:
        self.seal = seal
        self.node_id = node_id
        self.boot = secrets.token_hex(16)
        self.started = seal.now()  # a message stamped earlier was meant for a previous life
        self._latest = self.started  # the latest wall-clock time seen: never goes back
        self._sent: dict[str, int] = {}  # recipient -> last sequence number used
        # (from, boot) -> its window and the newest `at` seen from it, least recently used first
        self._seen: dict[tuple[str, str], tuple[ReplayWindow, float]] = {}

    def wrap(self, to: str, message: dict[str, Any]) -> str:
        seq = self._sent.get(to, -1) + 1
        self._sent[to] = seq
        data = {"from": self.node_id, "boot": self.boot, "seq": seq, "msg": message}
        return self.seal.seal(KIND, to, data)

    def unwrap(self, raw: bytes | str) -> tuple[str, dict[str, Any]] | None:
        """(sender, message) if `raw` was sealed with the node key for this node, is fresh and
        was not seen before; None (counted, logged) otherwise."""
        if len(raw) > MAX_BYTES:
            self.seal.refuse(KIND, self.node_id, "oversized")
            return None
        opened = self.seal.open_stamped(KIND, self.node_id, raw, MAX_AGE)
        if opened is None:
            return None
        at, data = opened
        sender, boot, seq, message = _fields(data)
        if sender is None or boot is None or seq is None or message is None:
            self.seal.refuse(KIND, self.node_id, "malformed")
            return None
        self._latest = now = max(self.seal.now(), self._latest)
        if at < self.started:
            self.seal.refuse(KIND, self.node_id, "before-start")
            return None
        if now - at > MAX_AGE:  # fresh by a clock stepped back only
            self.seal.refuse(KIND, self.node_id, "stale")
            return None
        if not self._first_time(sender, boot, seq, at, now):
            self.seal.refuse(KIND, self.node_id, "replayed")
            return None
        return sender, message

    def _first_time(self, sender: str, boot: str, seq: int, at: float, now: float) -> bool:
        self._forget_stale(now)
        window, newest = self._seen.pop((sender, boot), (ReplayWindow(), at))
        if len(self._seen) >= MAX_BOOTS:
            del self._seen[next(iter(self._seen))]
        fresh = window.first_time(seq)
        self._seen[sender, boot] = (window, max(newest, at))  # last: least recent first
        return fresh

    def _forget_stale(self, now: float) -> None:
        """Drop the windows of lives whose every message seen is stale by now (so is any
        message of theirs seen before: none can be accepted again)."""
        while self._seen:
            key, (_, newest) = next(iter(self._seen.items()))
            if now - newest <= MAX_AGE:
                return
            del self._seen[key]


def _fields(data: Any) -> tuple[str | None, str | None, int | None, dict[str, Any] | None]:
    if not isinstance(data, dict):
        return None, None, None, None
    sender, boot = data.get("from"), data.get("boot")
    seq, message = data.get("seq"), data.get("msg")
    return (
        sender if isinstance(sender, str) and sender else None,
        boot if isinstance(boot, str) and 0 < len(boot) <= MAX_BOOT_CHARS else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None,
        message if isinstance(message, dict) else None,
    )
