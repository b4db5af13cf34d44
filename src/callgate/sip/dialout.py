"""Call records of calls dialled out through a trunk (docs/sip.md, "Dialling out").

Such a call never reaches the signaling hub (its callee is a number, not a user), so its CDR is
written here: opened with a `sip.dialout` audit entry in one transaction before the carrier is
called (direction `outbound`, caller the user, callee the E.164 number, policy decision
`allow` or `emergency`), then answered and finalized. Blocking: call in a thread.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from callgate.clock import Clock, SystemClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen

# refusal reason -> disposition
REFUSED = {"policy-denied": "denied", "trunk-busy": "busy", "dial-out-limit": "denied"}


class DialOutRecords:
    def __init__(self, cdrs: CdrRepository, clock: Clock | None = None) -> None:
        self._cdrs = cdrs
        self._clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def open(
        self,
        call_id: str,
        caller: str,
        number: str,
        trunk: str | None,
        emergency: bool,
        address: str | None,
        *,
        user_agent: str = "sip",
        rule: str | None = None,
        refused: tuple[str, str] | None = None,
        recording_required: bool = False,
    ) -> None:
        """The CDR row and its `sip.dialout` audit entry, in one transaction. `rule`: the policy
        rule that decided (default: the trunk's dial-out groups); `refused`: (reason, detail)
        of an attempt refused before the carrier was called — the row is finalized at once,
        disposition `denied` (reason `policy-denied`), `busy` (`trunk-busy`) or `failed`."""
        at = self._now()
        decision: str | None = "emergency" if emergency else "allow"
        if refused is not None and refused[0] == "policy-denied":
            decision = "deny"
        elif refused is not None and trunk is None:
            decision = None  # no trunk takes the number: no decision was made
        opened = CallOpen(
            call_id=call_id,
            caller_user=caller,
            callee_user=number,
            invite_at=at,
            caller_address=address,
            caller_user_agent=user_agent,
            direction="outbound",
            policy_rule=rule or (f"trunk:{trunk}" if trunk is not None else None),
            policy_decision=decision,
            recording_required=recording_required or None,
            encryption=None,
        )
        details: dict[str, object] = {
            "trunk": trunk, "number": number, "emergency": emergency, "address": address,
            "rule": opened.policy_rule, "decision": decision,
        }  # fmt: skip
        if refused is not None:
            details["refused"] = refused[1]
        with self._cdrs.engine.begin() as conn:
            entry = AuditLog.append_in(conn, caller, "sip.dialout", f"call:{call_id}", details, at)
            self._cdrs.open_in(conn, [replace(opened, audit_index=entry.seq)])
            if refused is not None:
                reason, detail = refused
                final = REFUSED.get(reason, "failed")
                self._cdrs.finalize_in(
                    conn, call_id, at, final, "server", reason, detail=detail[:200]
                )

    def anchored(self, call_id: str) -> None:
        """The call is recorded: its media goes through the server's recorder."""
        self._cdrs.update(call_id, anchored=True)

    def answered(self, call_id: str, encryption: str | None = None) -> None:
        """Answered; `encryption`: the carrier leg's media, `sdes-srtp` or `rtp`."""
        self._cdrs.update(call_id, answer_at=self._now(), encryption=encryption)

    def finish(
        self,
        call_id: str,
        disposition: str,
        ended_by: str,
        reason: str,
        detail: str = "",
        admin: str | None = None,
    ) -> None:
        """The CDR's final state; `admin`: the administrator who ended the call, audited
        `call.end_by_admin` in the same transaction (as the call engine does)."""
        at = self._now()
        with self._cdrs.engine.begin() as conn:
            self._cdrs.finalize_in(
                conn, call_id, at, disposition, ended_by, reason, detail=detail or None
            )
            if admin is not None:
                details = {"reason": reason, "disposition": disposition}
                AuditLog.append_in(conn, admin, "call.end_by_admin", f"call:{call_id}", details, at)
