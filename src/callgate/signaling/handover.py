"""A call outlives its signaling node (docs/scaling.md, "When a node dies"): the rules.

Media never crosses a signaling node, so when one dies its calls go on; only their signaling
is orphaned. The call's record (PostgreSQL) says which node holds it (`node_id`) and when that
node last beat for it (`last_alive_at`, records/heartbeat.py, every 2 s).

- A party re-attaches (`call.reattach`) through any node. If the holder lives, it rebinds the
  call to the new connection. If it has been silent for a *lease* (and is gone from the bus),
  the node asked takes the record over with one compare-and-set UPDATE (`node_id` from the dead
  node to itself): of several nodes trying at once, exactly one wins.
- Every write to a call's record names the node that must hold it (records/cdr.py), so a node
  that was only thought dead cannot write a record another node took over: no split brain.
- A call nobody re-attached within two leases is finalized `node-lost` by a surviving node,
  ending at its last sign of life.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callgate.records.cdr_types import CdrRecord
from callgate.signaling import messages as m
from callgate.signaling.model import HeldCall

LEASE = 10.0  # seconds a silent node keeps its calls before another may take them over
MIN_LEASE = 4.0  # twice the call heartbeat: one missed beat never loses a call


def silent_since(now_wall: float, lease: float) -> datetime:
    """The time before which a node's last beat means it is dead, for a lease."""
    return datetime.fromtimestamp(now_wall, UTC) - timedelta(seconds=lease)


def refusal(record: CdrRecord | None, handle: str, node_id: str) -> tuple[str, str] | None:
    """Why `handle` may not re-attach to this call (error code, text), or None.

    A user who is not a party gets `not-found`, as for any call (existence is not leaked)."""
    if record is None or handle not in (record.caller_user, record.callee_user):
        return m.NOT_FOUND, "no such call"
    if record.end_at is not None:
        return m.NOT_FOUND, "the call has ended"
    if record.answer_at is None or record.caller_device is None or record.callee_device is None:
        return m.CONFLICT, "only an answered call can be re-attached"
    if record.anchored:
        return m.CONFLICT, "a recorded call's media went through its node: it ended with it"
    if record.node_id == node_id:
        return m.NOT_FOUND, "the call has ended"  # this node holds its calls in memory
    return None


def held_call(record: CdrRecord) -> HeldCall:
    """The call to rebuild from its record (refusal() passed: answered, both devices known)."""
    assert record.answer_at is not None
    return HeldCall(
        call_id=record.call_id,
        caller_handle=record.caller_user,
        caller_device=record.caller_device or "",
        callee_handle=record.callee_user,
        callee_device=record.callee_device or "",
        invite_wall=record.invite_at.timestamp(),
        answer_wall=record.answer_at.timestamp(),
        media=record.media_path is not None,
    )
