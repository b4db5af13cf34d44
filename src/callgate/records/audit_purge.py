"""Audit retention: deleting the oldest audit entries without losing the ability to verify.

The chain can only lose a *prefix*, and only one that ends exactly at a stored signed checkpoint
(the anchor): its head hash is the hash of the last deleted entry, so `audit verify` checks the
rest of the chain from there as if from genesis, and the signature proves the anchor was not
made up. Before anything is deleted the whole chain is verified; a chain that does not verify is
never purged (the evidence of tampering would go with it). The purge's own `retention.purge`
entry — appended in the same transaction, so it survives — holds the audit-verified summary of
what went: seq and time range, counts per action, and the anchor. `verify` insists that a chain
starting after seq 1 has such an entry naming exactly its anchor: deleting entries from the front
by hand is reported, even when someone stored an old checkpoint as a fake anchor.

Legal hold wins: the prefix ends before the first entry about a held user or held call (or a call
of a held user), so held records' audit entries are never deleted. So does a recording not yet
purged: its closing entry holds the digest its export is verified against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, delete, func, literal, or_, select

from callgate.records.audit_chain import VerifyResult
from callgate.storage.models import AuditCheckpoint, AuditEntry, Call, Recording, User

entries = cast(Table, AuditEntry.__table__)
checkpoints = cast(Table, AuditCheckpoint.__table__)
calls = cast(Table, Call.__table__)
users = cast(Table, User.__table__)
recordings = cast(Table, Recording.__table__)

PURGE_ACTION = "retention.purge"


def anchor_recorded(engine: Engine, anchor: int) -> bool:
    """Does a `retention.purge` entry still in the chain name `anchor` as where it purged to?"""
    with engine.connect() as conn:
        rows = conn.execute(select(entries.c.details).where(entries.c.action == PURGE_ACTION))
        for (details,) in rows:
            try:
                audit = json.loads(details).get("audit") or {}
            except (ValueError, AttributeError):
                continue
            if isinstance(audit, dict) and audit.get("through_seq") == anchor:
                return True
    return False


def _first_held_seq(conn: Connection) -> int | None:
    """The first entry about anything on legal hold (held users, held calls, calls of held
    users) or about a recording still kept (its closing entry vouches for it)."""
    held_users = select(users.c.handle).where(users.c.legal_hold.is_(True))
    held_calls = select(literal("call:") + calls.c.call_id).where(
        or_(
            calls.c.legal_hold.is_(True),
            calls.c.caller_user.in_(held_users),
            calls.c.callee_user.in_(held_users),
        )
    )
    held_user_objects = select(literal("user:") + users.c.handle).where(
        users.c.legal_hold.is_(True)
    )
    kept_recordings = select(literal("recording:") + recordings.c.recording_id)
    found = conn.scalar(
        select(func.min(entries.c.seq)).where(
            or_(
                entries.c.object.in_(held_calls),
                entries.c.object.in_(held_user_objects),
                entries.c.object.in_(kept_recordings),
            )
        )
    )
    return int(found) if found is not None else None


def plan_and_delete(
    conn: Connection,
    days: int | None,
    now: datetime,
    verified: VerifyResult | None,
    public_key: Ed25519PublicKey | None,
) -> tuple[int, dict[str, Any]]:
    """Delete the audit prefix retention allows (see the module docstring); the summary for the
    `retention.purge` entry. `verified` is the verdict on the whole chain, taken just before."""
    if days is None:
        return 0, {"deleted": 0, "kept": "no retention period set"}
    if public_key is None or verified is None:
        return 0, {"deleted": 0, "kept": "no audit signing key to verify the chain first"}
    if not verified.ok:
        return 0, {
            "deleted": 0,
            "kept": "the chain does not verify; nothing is deleted",
            "problem": verified.problem,
            "first_bad_seq": verified.first_bad_seq,
        }
    cutoff = now - timedelta(days=days)
    start = int(conn.scalar(select(func.min(entries.c.seq))) or 1)
    limit = _first_held_seq(conn)
    query = (
        select(checkpoints.c.size, checkpoints.c.head_hash)
        .join(entries, entries.c.seq == checkpoints.c.size)
        .where(checkpoints.c.size >= start, entries.c.at < cutoff)
        .order_by(checkpoints.c.size.desc())
    )
    if limit is not None:
        query = query.where(checkpoints.c.size < limit)
    anchor = conn.execute(query.limit(1)).first()
    if anchor is None:
        reason = "no signed checkpoint older than the cutoff"
        if limit is not None:
            reason += f" before the first entry about held records (seq {limit})"
        return 0, {"deleted": 0, "cutoff": cutoff.isoformat(), "kept": reason}
    through, head = int(anchor.size), str(anchor.head_hash)
    gone = entries.c.seq <= through
    count, first_at, last_at = conn.execute(
        select(func.count(), func.min(entries.c.at), func.max(entries.c.at)).where(gone)
    ).one()
    actions: Mapping[str, int] = {
        str(action): int(n)
        for action, n in conn.execute(
            select(entries.c.action, func.count()).where(gone).group_by(entries.c.action)
        )
    }
    conn.execute(delete(entries).where(gone))
    return int(count), {
        "deleted": int(count),
        "cutoff": cutoff.isoformat(),
        "from_seq": start,
        "through_seq": through,
        "anchor": {"size": through, "head_hash": head},
        "at_from": first_at.isoformat() if isinstance(first_at, datetime) else None,
        "at_to": last_at.isoformat() if isinstance(last_at, datetime) else None,
        "actions": dict(sorted(actions.items())),
    }
