"""Call records for INVITEs the edge ends itself (docs/sip.md, "Call records").

An INVITE that reaches the signaling hub gets its CDR and `call.invite` audit entry there. One
the edge refuses first gets them here, so every attempt leaves evidence, including INVITEs from
the internet that never authenticate:

- refused outright (403 throttled or disabled, 488 unusable SDP, 404 not a user, 503 busy…):
  recorded at once;
- challenged (401): held for 32 s (64·T1, RFC 3261 §17.2.1) under its Call-ID; a phone that
  answers the challenge continues the same attempt, which the hub records. One that never does
  is recorded as `sip 401` when the hold ends.

The caller is whatever the request claims, marked as such: `sip:<From user>@<source IP>` (a
handle never contains ":" or "@", so it cannot pass for a user), truncated. At most
`PER_ADDRESS` records a minute per source address are written; past that attempts are only
counted, and one `sip.call.flood` audit entry marks each minute an address floods.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from callgate.clock import Clock, SystemClock
from callgate.rate import Window
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen
from callgate.sip.message import SipRequest
from callgate.sip.uri import parse_name_addr, parse_sip_uri

log = logging.getLogger(__name__)

HOLD = 32.0  # seconds a challenged INVITE waits for its answer
PER_ADDRESS = 30  # records a minute per source address
MAX_PENDING = 10_000
MAX_ADDRESSES = 10_000


@dataclass(frozen=True, slots=True)
class Attempt:
    """What is kept of a refused INVITE: claimed parties, source, and our final response."""

    caller: str
    callee: str
    address: str
    user_agent: str | None
    status: int
    reason: str
    at: float  # wall seconds of the INVITE


def describe(request: SipRequest, address: str, status: int, reason: str, at: float) -> Attempt:
    return Attempt(
        caller=f"sip:{_user(request.headers.get('from'))}@{address}"[:128],
        callee=_callee(request),
        address=address,
        user_agent=(request.headers.get("user-agent") or "")[:255] or None,
        status=status,
        reason=reason[:200],
        at=at,
    )


def _user(value: str | None) -> str:
    try:
        return (parse_sip_uri(parse_name_addr(value or "").uri).user or "?")[:64]
    except ValueError:
        return "?"


def _callee(request: SipRequest) -> str:
    try:
        return (parse_sip_uri(request.uri).user or "?")[:64]
    except ValueError:
        return "?"


def disposition(status: int) -> str:
    if status in (401, 403, 407):
        return "denied"
    if status in (486, 600):
        return "busy"
    if status == 487:
        return "cancelled"
    return "failed"


class Attempts:
    def __init__(
        self, cdrs: CdrRepository, audit: AuditLog | None, clock: Clock | None = None
    ) -> None:
        self._cdrs = cdrs
        self._audit = audit
        self._clock = clock or SystemClock()
        self._pending: OrderedDict[str, tuple[float, Attempt]] = OrderedDict()
        self._windows: OrderedDict[str, Window] = OrderedDict()  # address -> its records a minute
        self.unrecorded = 0  # over the per-address limit: counted only

    def challenged(self, call_id: str, attempt: Attempt) -> None:
        """A 401: recorded when no authenticated INVITE of this Call-ID follows within HOLD."""
        self._pending.pop(call_id, None)
        self._pending[call_id] = (self._clock.monotonic() + HOLD, attempt)
        while len(self._pending) > MAX_PENDING:
            _, (_, oldest) = self._pending.popitem(last=False)
            self.record(oldest)

    def authenticated(self, call_id: str) -> None:
        self._pending.pop(call_id, None)

    def due(self) -> list[Attempt]:
        """Challenged attempts whose hold ended: to `record` (called by the edge's sweep)."""
        now = self._clock.monotonic()
        due: list[Attempt] = []
        while self._pending:
            call_id, (until, attempt) = next(iter(self._pending.items()))
            if until > now:
                break
            del self._pending[call_id]
            due.append(attempt)
        return due

    def _admit(self, address: str) -> bool | None:
        """True: record; False: over the limit; None: over it for the first time this minute."""
        window = self._windows.pop(address, None) or Window(60.0)
        count = window.hit(self._clock.monotonic())
        self._windows[address] = window
        while len(self._windows) > MAX_ADDRESSES:
            self._windows.popitem(last=False)
        if count <= PER_ADDRESS:
            return True
        return None if count == PER_ADDRESS + 1 else False

    def record(self, attempt: Attempt) -> None:
        """Write the attempt's CDR and audit entry (blocking: call it in a thread)."""
        admitted = self._admit(attempt.address)
        if not admitted:
            self.unrecorded += 1
            if admitted is None and self._audit is not None:
                details = {"address": attempt.address, "per_minute": PER_ADDRESS}
                self._audit.append(f"sip:{attempt.address}", "sip.call.flood", "sip", details)
            return
        call_id = uuid.uuid4().hex
        at = datetime.fromtimestamp(attempt.at, UTC)
        opened = CallOpen(
            call_id=call_id,
            caller_user=attempt.caller,
            callee_user=attempt.callee,
            invite_at=at,
            caller_address=attempt.address,
            caller_user_agent=attempt.user_agent,
            direction="inbound",
            encryption=None,
        )
        details = {
            "from": attempt.caller,
            "to": attempt.callee,
            "address": attempt.address,
            "status": attempt.status,
            "reason": attempt.reason,
        }
        # the CDR and its audit entry in one transaction, as the hub writes a call's
        with self._cdrs.engine.begin() as conn:
            entry = AuditLog.append_in(
                conn, attempt.caller, "sip.call.refused", f"call:{call_id}", details, at
            )
            self._cdrs.open_in(conn, [replace(opened, audit_index=entry.seq)])
            self._cdrs.finalize_in(
                conn,
                call_id,
                at,
                disposition(attempt.status),
                "server",
                f"sip {attempt.status}",
                duration_s=None,
                detail=attempt.reason,
            )
