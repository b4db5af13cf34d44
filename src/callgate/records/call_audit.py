"""Audit entries of a call's life (docs/audit.md), written by the call recorder in the same
transaction as the CDR write they go with (records/record_batch.py): call.invite (the row is
opened), call.answered, call.denied (the policy refused it; nobody rang) and call.ended (the row
is finalized).

Actors: the caller for call.invite, the answering callee for call.answered, whoever ended the
call for call.ended (the caller's or callee's handle, the administrator's, or "system" when the
server ended it: timeouts, max-duration, failures), "system" for call.denied.
"""

from __future__ import annotations

from callgate.records.audit import NewEntry

SYSTEM = "system"


def invite(
    call_id: str,
    caller: str,
    callee: str,
    *,
    ringing_devices: int,
    relay_only: bool,
    policy_rule: str | None,
    policy_decision: str | None,
    caller_address: str | None,
) -> NewEntry:
    details = {
        "caller": caller,
        "callee": callee,
        "ringing_devices": ringing_devices,
        "relay_only": relay_only,
        "policy_rule": policy_rule,
        "policy_decision": policy_decision,
        "caller_address": caller_address,
    }
    return caller, "call.invite", f"call:{call_id}", details


def answered(call_id: str, callee: str, callee_device: str | None) -> NewEntry:
    details = {"callee": callee, "callee_device": callee_device}
    return callee, "call.answered", f"call:{call_id}", details


def ended(
    call_id: str,
    actor: str,
    *,
    disposition: str,
    reason: str,
    ended_by: str,
    duration_s: float | None,
    detail: str | None,
) -> NewEntry:
    """call.denied when the policy refused the call (detail: the rule), call.ended otherwise."""
    if disposition == "denied":
        details: dict[str, object] = {"reason": reason, "rule": detail}
        return SYSTEM, "call.denied", f"call:{call_id}", details
    details = {
        "disposition": disposition,
        "reason": reason,
        "ended_by": ended_by,
        "duration_s": duration_s,
        "detail": detail,
    }
    return actor, "call.ended", f"call:{call_id}", details
