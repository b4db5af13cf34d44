"""Audit entries of a call's life (docs/audit.md), written by the signaling hub in the same
transaction as the CDR write they go with: call.invite (the row is opened), call.answered,
call.denied (the policy refused it; nobody rang) and call.ended (the row is finalized).

Actors: the caller for call.invite, the answering callee for call.answered, whoever ended the
call for call.ended (the caller's or callee's handle, the administrator's, or "system" when the
server ended it: timeouts, max-duration, failures), "system" for call.denied.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from callgate.records.audit import AuditLog
from callgate.records.audit_chain import Entry

SYSTEM = "system"


def invite_in(
    conn: Connection,
    call_id: str,
    caller: str,
    callee: str,
    at: datetime,
    *,
    ringing_devices: int,
    relay_only: bool,
    policy_rule: str | None,
    policy_decision: str | None,
    caller_address: str | None,
) -> Entry:
    details = {
        "caller": caller,
        "callee": callee,
        "ringing_devices": ringing_devices,
        "relay_only": relay_only,
        "policy_rule": policy_rule,
        "policy_decision": policy_decision,
        "caller_address": caller_address,
    }
    return AuditLog.append_in(conn, caller, "call.invite", f"call:{call_id}", details, at)


def answered_in(
    conn: Connection, call_id: str, callee: str, callee_device: str | None, at: datetime
) -> Entry:
    details = {"callee": callee, "callee_device": callee_device}
    return AuditLog.append_in(conn, callee, "call.answered", f"call:{call_id}", details, at)


def ended_in(
    conn: Connection,
    call_id: str,
    actor: str,
    at: datetime,
    *,
    disposition: str,
    reason: str,
    ended_by: str,
    duration_s: float | None,
    detail: str | None,
) -> Entry:
    """call.denied when the policy refused the call (detail: the rule), call.ended otherwise."""
    if disposition == "denied":
        details: dict[str, object] = {"reason": reason, "rule": detail}
        return AuditLog.append_in(conn, SYSTEM, "call.denied", f"call:{call_id}", details, at)
    details = {
        "disposition": disposition,
        "reason": reason,
        "ended_by": ended_by,
        "duration_s": duration_s,
        "detail": detail,
    }
    return AuditLog.append_in(conn, actor, "call.ended", f"call:{call_id}", details, at)
