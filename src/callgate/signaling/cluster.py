"""Several signaling nodes: what the hub needs from the bus between nodes (docs/scaling.md).

A call lives on one node, its *owner*: the node the caller's device is connected to. The owner's
`CallEngine` holds the call; the callee's devices on other nodes are entered in that engine as
*remote devices*. Everything the engine sends them goes through the bus to their node, and what
they answer comes back the same way. So the engine (pure, single-threaded) is unchanged and
every call still has exactly one state machine.

The bus is a small interface (`ClusterBus`) so the transport (Redis pub/sub,
runtime/redis_bus.py) stays out of the signaling layer. Messages between nodes, as JSON objects:

- `{"op": "send", "device": ID, "owner": NODE, "msg": {...}}` — deliver a server message to a
  device connected to the receiving node (the owner notes which node holds the call).
- `{"op": "in", "device": ID, "msg": {...}}` — a client request (answer, candidate, hang-up,
  stats…) from a remote device about a call the receiving node owns.
- `{"op": "gone", "device": ID}` — a remote device disconnected (its call ends or stops ringing).
- `{"op": "end", "call": ID, "admin": HANDLE}` — an administrator ended the call elsewhere.
- `reattach`, `owner`, `lost` — a call moving to another node (signaling/handover.py).

The bus carries each message in a signed envelope (runtime/node_envelope.py): the hub sees only
messages sealed with the node key for this node, fresh and never seen before; anything else
(forged, unsigned, stale, replayed, signed with a relay's key) is dropped before any field is
read (docs/scaling.md, "Trust").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from callgate.errors import CallgateError
from callgate.signaling.live import LiveCall


class ClusterUnavailable(CallgateError):
    """The bus between nodes cannot be reached: no new call is placed (fail closed)."""


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    """A connected device as the other nodes see it."""

    device_id: str
    handle: str
    display_name: str
    relay_only: bool
    node: str
    # a registered SIP phone (G.711 only): a recorded call to its user is anchored in G.711
    # whichever node holds it (signaling/anchoring.py)
    phone: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RemoteDevice:
        return cls(
            device_id=str(raw["device_id"]),
            handle=str(raw["handle"]),
            display_name=str(raw["display_name"]),
            relay_only=bool(raw["relay_only"]),
            node=str(raw["node"]),
            phone=raw.get("phone") is True,  # entries written before it have none: not a phone
        )


class ClusterPeer(Protocol):
    """What the bus asks of the local hub."""

    def snapshot(self) -> dict[str, Any]:
        """This node's live calls and presence, published for the other nodes."""
        ...

    def local_devices(self) -> list[RemoteDevice]:
        """Every device connected here (re-announced after the bus comes back)."""
        ...

    async def on_message(self, message: dict[str, Any]) -> None:
        """A message another node sent to this one."""
        ...


class ClusterBus(Protocol):
    node_id: str

    @property
    def available(self) -> bool: ...

    def attach(self, peer: ClusterPeer) -> None: ...

    async def devices_of(self, handle: str) -> list[RemoteDevice]:
        """`handle`'s devices connected to other live nodes; ClusterUnavailable if unknown."""
        ...

    def device_up(self, device: RemoteDevice) -> None: ...

    def device_down(self, device: RemoteDevice) -> None: ...

    def post(
        self,
        node: str,
        message: dict[str, Any],
        undelivered: Callable[[], None] | None = None,
    ) -> None:
        """Send to one node, in the background (dropped while the bus is down); `undelivered`
        runs when the node is not listening (dead)."""
        ...

    def snapshots(self) -> dict[str, dict[str, Any]]:
        """The other live nodes' last snapshots, by node id (a second old at most, typically)."""
        ...

    async def announce_pair(self, users: tuple[str, str], *, live: bool = True) -> None:
        """Tell the registered relays at once that these users are (live) or are not (not
        live) about to be the parties of a call: call-bound relaying admits them before the
        answer reaches the clients, not at the next snapshot. Bounded, best effort."""
        ...


def live_call_json(call: LiveCall) -> dict[str, Any]:
    raw = asdict(call)
    raw["invited_at"] = call.invited_at.isoformat()
    raw["answered_at"] = call.answered_at.isoformat() if call.answered_at else None
    return raw


def live_call_from_json(raw: Mapping[str, Any]) -> LiveCall:
    answered = raw.get("answered_at")
    return LiveCall(
        call_id=str(raw["call_id"]),
        caller=str(raw["caller"]),
        callee=str(raw["callee"]),
        state=str(raw["state"]),
        invited_at=datetime.fromisoformat(str(raw["invited_at"])),
        answered_at=datetime.fromisoformat(str(answered)) if answered else None,
        duration_s=float(raw["duration_s"]),
        media_path=raw.get("media_path"),
        relay=raw.get("relay"),
        trunk=raw.get("trunk"),
    )
