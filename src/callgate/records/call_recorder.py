"""A call's records as its life goes on: the CDR row, its audit entries (records/call_audit.py),
the quality reports and the link to the relay sessions it used.

The signaling hub tells the recorder what happened; the recorder turns it into database writes
on one writer thread (records/writer.py), so a call's rows are written in the order they happen
and a burst of calls costs one commit. Each CDR change and its audit entry share a transaction.
Every method queues its writes and returns their number; `done()` says up to which number they
are finished, `on_progress` how to be told (records/writer.py). The hub waits for a new call's
row before anyone rings and asks `open_failed` (fail closed: a call whose record cannot be
written is not placed); it waits for the other writes before it tells a party what they record.
A write that fails is logged and counted.

Quality reports (`call.stats`, every 2 s from each party) are coalesced: a party's first report
of a call and every final one are written at once; later ones at most every QUALITY_EVERY
seconds per party (the latest held in memory replaces the one before), and what is held is
written when the call ends, on `settled()` and on `close()`. All reports due together, of any
number of calls, share one transaction. A crash loses at most QUALITY_EVERY seconds of a live
call's quality figures; the final reports, sent after the end, are written as they come.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from callgate.records import call_audit
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen
from callgate.records.quality import StreamStats
from callgate.records.quality_store import QualityReport, QualityRepository
from callgate.records.record_batch import RecordBatch, record_batch
from callgate.records.writer import RecordWriter
from callgate.storage.models import utcnow

# A new call's record not written within this many seconds (database unreachable) fails: the
# call is not placed, rather than rung late after its caller gave up. Later writes wait longer.
OPEN_WAIT = 5.0
# A party's non-final quality reports are written at most this often (seconds) per call.
QUALITY_EVERY = 10.0
PARTIES = ("caller", "callee")


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


@dataclass(slots=True)
class _Buffered:
    """A party's quality reports in a call, as the recorder buffers them (module docstring)."""

    latest: QualityReport | None = None  # the newest report not written yet
    due: bool = False  # `latest` goes with the next quality write (else it is held)
    next_at: float = 0.0  # monotonic: when a non-final report is due again


class CallRecorder:
    def __init__(self, cdrs: CdrRepository, quality: QualityRepository) -> None:
        self.cdrs = cdrs
        self.quality = quality
        self._batch: RecordBatch | None = None  # the writer thread's current transaction's
        self._writer = RecordWriter(cdrs.engine, batch=self._batch_of)
        self.quality_every = QUALITY_EVERY
        # The one quality buffer, (call, party) -> _Buffered; the signaling loop's thread and the
        # writer's share it (`_lock`). The due entries are its last ones (see `_write_quality`).
        self._lock = threading.Lock()
        self._quality: OrderedDict[tuple[str, str], _Buffered] = OrderedDict()

    @contextlib.contextmanager
    def _batch_of(self, conn: Connection) -> Iterator[RecordBatch]:
        """Around each group-committed transaction of the writer: its writes are held and sent
        together at its end (records/record_batch.py)."""
        with record_batch(conn, self.cdrs) as batch:
            self._batch = batch
            try:
                yield batch
            finally:
                self._batch = None

    def _current(self) -> RecordBatch:
        if self._batch is None:
            raise RuntimeError("a records write ran outside the writer's batch")
        return self._batch

    def open(self, opened: CallOpen, *, ringing_devices: int, relay_only: bool) -> int:
        """The CDR row and call.invite, in one transaction (see `open_failed`)."""
        invite = call_audit.invite(
            opened.call_id,
            opened.caller_user,
            opened.callee_user,
            ringing_devices=ringing_devices,
            relay_only=relay_only,
            policy_rule=opened.policy_rule,
            policy_decision=opened.policy_decision,
            caller_address=opened.caller_address,
        )

        def open_audited(conn: Connection) -> None:
            batch = self._current()
            batch.cdr.open(opened)
            batch.audit(invite, opened.invite_at, index_of=opened.call_id)

        return self._writer.post(open_audited, report=True, max_wait=OPEN_WAIT)

    def open_failed(self, number: int) -> bool:
        """Whether `open` number `number`, finished, failed (ask exactly once per open)."""
        return self._writer.take_failure(number)

    def update(self, call_id: str, /, **changes: Any) -> int:
        """CDR columns that became known (relay candidates, media path, codec, callee device)."""
        return self._writer.post(lambda conn: self._current().cdr.update(call_id, changes))

    def answered(
        self,
        call_id: str,
        callee: str,
        callee_device: str | None,
        at: datetime,
        /,
        **changes: Any,
    ) -> int:
        """call.answered, with the CDR update that records the answer."""
        entry = call_audit.answered(call_id, callee, callee_device)

        def answer(conn: Connection) -> None:
            batch = self._current()
            batch.audit(entry, at)
            batch.cdr.update(call_id, changes)

        return self._writer.post(answer)

    def ended(self, end: CallEnd) -> int:
        """The CDR's final state and call.ended (and call.end_by_admin) in one transaction,
        after the quality reports held for the call."""
        with self._lock:
            parties = [self._quality.pop((end.call_id, party), None) for party in PARTIES]
        held = [p.latest for p in parties if p is not None and p.latest is not None]
        if held:
            self._writer.post_standalone(lambda: self.quality.upsert_many(held))
        entries = [
            call_audit.ended(
                end.call_id,
                end.actor,
                disposition=end.disposition,
                reason=end.reason,
                ended_by=end.ended_by,
                duration_s=end.duration_s,
                detail=end.detail,
            )
        ]
        if end.admin:
            details = {"reason": end.reason, "disposition": end.disposition}
            entries.append((end.admin, "call.end_by_admin", f"call:{end.call_id}", details))

        def finalize(conn: Connection) -> None:
            batch = self._current()
            done = batch.cdr.finalize(
                end.call_id,
                end.end_at,
                end.disposition,
                end.ended_by,
                end.reason,
                end.duration_s,
                end.detail,
            )
            # several nodes: another node may have taken the call over, and ends it itself
            only_if = done if self.cdrs.node_id is not None else None
            for entry in entries:
                batch.audit(entry, end.end_at, only_if=only_if)

        return self._writer.post(finalize)

    def stats(
        self,
        call_id: str,
        party: str,
        streams: Sequence[StreamStats],
        final: bool,
        at: datetime | None,
    ) -> int:
        """A party's quality report, written now or held (see the module's docstring); the
        number of the write that will store it (the last one queued while it is held)."""
        key = (call_id, party)
        report = QualityReport(call_id, party, tuple(streams), final, at or utcnow())
        now = time.monotonic()
        with self._lock:
            buffered = self._quality.get(key) or self._quality.setdefault(key, _Buffered())
            if buffered.latest is None or final or not buffered.latest.final:
                buffered.latest = report  # a final one is never replaced
            if not final and now < buffered.next_at:
                return self._writer.queued  # held
            buffered.next_at = now + self.quality_every
            self._due(key, buffered)
        return self._writer.post_standalone(self._write_quality)

    def _due(self, key: tuple[str, str], buffered: _Buffered) -> None:
        """Mark `buffered` for the next quality write: due entries are the buffer's last."""
        buffered.due = True
        self._quality.move_to_end(key)

    def _write_quality(self) -> None:
        """The writer's quality job: every due report, in one transaction of its own (a bad
        report loses no CDR write). A job finding none (an earlier one took them) does nothing."""
        with self._lock:
            due = []
            for key in reversed(self._quality):
                if not self._quality[key].due:
                    break
                due.append(key)
            taken = []
            for key in due:
                buffered = self._quality[key]
                if buffered.latest is not None:
                    taken.append(buffered.latest)
                    if buffered.latest.final:  # the party's last: nothing more to hold
                        del self._quality[key]
                        continue
                buffered.latest, buffered.due = None, False
        if taken:
            self.quality.upsert_many(taken)

    def _send_held(self) -> None:
        with self._lock:
            held = [(k, b) for k, b in self._quality.items() if b.latest is not None and not b.due]
            for key, buffered in held:
                self._due(key, buffered)
        if held:
            self._writer.post_standalone(self._write_quality)

    def link_relay_sessions(self, call_id: str) -> int:
        return self._writer.post_standalone(lambda: self.cdrs.link_relay_sessions(call_id))

    def queued(self) -> int:
        """The number of the last write queued."""
        return self._writer.queued

    def done(self) -> int:
        """Every write numbered up to this one is finished (committed, or failed and logged)."""
        return self._writer.done

    def want(self, number: int) -> None:
        """Ask to be told (`on_progress`) once write `number` is finished. Set it, then check
        `done()`: if the writer finished it meanwhile, it may not call."""
        writer = self._writer
        writer.want = max(writer.want, number)

    def on_progress(self, callback: Callable[[int], None]) -> None:
        """`callback(done)`, on the writer's thread, after a batch that finished a wanted write."""
        self._writer.progress = callback

    def on_gave_up(self, callback: Callable[[int], None]) -> None:
        """`callback(number)`, on the writer's thread, when a reported write (an `open`) failed
        before its batch finished (it waited past OPEN_WAIT while the database was away)."""
        self._writer.gave_up = callback

    def settled(self) -> Future[None]:
        """Done when every write queued so far is (quality reports held included)."""
        self._send_held()
        return self._writer.submit_standalone(lambda: None)

    def close(self) -> None:
        """Write what is queued (quality reports held included), then stop the writer thread."""
        self._send_held()
        self._writer.close()
