"""A call's records as its life goes on: the CDR row, its audit entries (records/call_audit.py),
the quality reports and the link to the relay sessions it used.

The signaling hub tells the recorder what happened; the recorder turns it into database writes
on one writer thread (records/writer.py), so a call's rows are written in the order they happen
and a burst of calls costs one commit. Each CDR change and its audit entry share a transaction.
`open` returns a future the hub awaits before anyone rings (fail closed: a call whose record
cannot be written is not placed); every other write is fire-and-forget, logged when it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from callgate.records import call_audit
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen
from callgate.records.quality import StreamStats
from callgate.records.quality_store import QualityRepository
from callgate.records.writer import RecordWriter

# A new call's record not written within this many seconds (database unreachable) fails: the
# call is not placed, rather than rung late after its caller gave up. Later writes wait longer.
OPEN_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended, as the CDR and the audit's call.ended (or call.denied) record it."""

    call_id: str
    end_at: datetime
    disposition: str
    reason: str
    ended_by: str  # "caller", "callee", "system" or "admin:<handle>"
    actor: str  # whom the audit entry names (call_audit.SYSTEM when the server ended it)
    duration_s: float | None  # None when never answered
    detail: str | None = None
    admin: str | None = None  # the administrator who ended it: also audited call.end_by_admin


class CallRecorder:
    def __init__(self, cdrs: CdrRepository, quality: QualityRepository) -> None:
        self.cdrs = cdrs
        self.quality = quality
        self._writer = RecordWriter(cdrs.engine)

    def open(self, opened: CallOpen, *, ringing_devices: int, relay_only: bool) -> Future[None]:
        """The CDR row and call.invite, in one transaction; fails with RecordWriteError."""

        def open_audited(conn: Connection) -> None:
            entry = call_audit.invite_in(
                conn,
                opened.call_id,
                opened.caller_user,
                opened.callee_user,
                opened.invite_at,
                ringing_devices=ringing_devices,
                relay_only=relay_only,
                policy_rule=opened.policy_rule,
                policy_decision=opened.policy_decision,
                caller_address=opened.caller_address,
            )
            self.cdrs.open_in(conn, [replace(opened, audit_index=entry.seq)])

        return self._writer.submit(open_audited, max_wait=OPEN_WAIT)

    def update(self, call_id: str, /, **changes: Any) -> None:
        """CDR columns that became known (relay candidates, media path, codec, callee device)."""
        self._writer.submit(lambda conn: self.cdrs.update_in(conn, call_id, **changes))

    def answered(
        self,
        call_id: str,
        callee: str,
        callee_device: str | None,
        at: datetime,
        /,
        **changes: Any,
    ) -> None:
        """call.answered, with the CDR update that records the answer."""

        def answer(conn: Connection) -> object:
            call_audit.answered_in(conn, call_id, callee, callee_device, at)
            return self.cdrs.update_in(conn, call_id, **changes)

        self._writer.submit(answer)

    def ended(self, end: CallEnd) -> None:
        """The CDR's final state and call.ended (and call.end_by_admin) in one transaction."""

        def finalize(conn: Connection) -> object:
            closing = (end.call_id, end.end_at, end.disposition, end.ended_by, end.reason)
            done = self.cdrs.finalize_in(
                conn, *closing, duration_s=end.duration_s, detail=end.detail
            )
            if not done and self.cdrs.node_id is not None:
                return done  # several nodes: another node took the call over and ends it
            call_audit.ended_in(
                conn,
                end.call_id,
                end.actor,
                end.end_at,
                disposition=end.disposition,
                reason=end.reason,
                ended_by=end.ended_by,
                duration_s=end.duration_s,
                detail=end.detail,
            )
            if end.admin:
                AuditLog.append_in(
                    conn,
                    end.admin,
                    "call.end_by_admin",
                    f"call:{end.call_id}",
                    {"reason": end.reason, "disposition": end.disposition},
                    end.end_at,
                )
            return done

        self._writer.submit(finalize)

    def stats(
        self,
        call_id: str,
        party: str,
        streams: Sequence[StreamStats],
        final: bool,
        at: datetime | None,
    ) -> None:
        """A party's quality report (its own transaction: a bad report loses no CDR write)."""
        rows = list(streams)
        self._writer.submit_standalone(lambda: self.quality.upsert(call_id, party, rows, final, at))

    def link_relay_sessions(self, call_id: str) -> None:
        self._writer.submit_standalone(lambda: self.cdrs.link_relay_sessions(call_id))

    def settled(self) -> Future[None]:
        """Done when every write queued so far is."""
        return self._writer.submit_standalone(lambda: None)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self._writer.close()
