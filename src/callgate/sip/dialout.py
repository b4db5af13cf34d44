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


class DialOutRecords:
    def __init__(self, cdrs: CdrRepository, clock: Clock | None = None) -> None:
        self._cdrs = cdrs
        self._clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def open(
        self, call_id: str, caller: str, number: str, trunk: str, emergency: bool, address: str
    ) -> None:
        at = self._now()
        opened = CallOpen(
            call_id=call_id,
            caller_user=caller,
            callee_user=number,
            invite_at=at,
            caller_address=address,
            caller_user_agent="sip",
            direction="outbound",
            policy_rule=f"trunk:{trunk}",
            policy_decision="emergency" if emergency else "allow",
            encryption=None,
        )
        details = {"trunk": trunk, "number": number, "emergency": emergency, "address": address}
        with self._cdrs.engine.begin() as conn:
            entry = AuditLog.append_in(conn, caller, "sip.dialout", f"call:{call_id}", details, at)
            self._cdrs.open_in(conn, [replace(opened, audit_index=entry.seq)])

    def answered(self, call_id: str) -> None:
        self._cdrs.update(call_id, answer_at=self._now())

    def finish(self, call_id: str, disposition: str, ended_by: str, reason: str) -> None:
        self._cdrs.finalize(call_id, self._now(), disposition, ended_by, reason)
