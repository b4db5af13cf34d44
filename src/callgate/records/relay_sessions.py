"""DbEventSink: records TURN allocation events as `relay_sessions` rows, off the data path.

`emit()` only appends to a bounded queue (it never blocks and never touches the database); one
writer thread drains the queue in batches and upserts rows: insert on CREATED, counters and peers
on REFRESHED / PERMISSION / CHANNEL, end time and reason on DELETED — with, in the same
transaction, the session's summary in the audit log (relay.session, object relay:<allocation id>).
It is also the relay's AuthEventSink: each throttled burst of failed TURN authentications becomes
one turn.auth_throttled audit entry, written by the same thread.
`flush()` waits until everything emitted so far is written; `close()` flushes and stops the writer.

PROGRESS events (every few seconds while an allocation relays, turn/server.py) keep each open
row's counters and `updated_at` close to the truth. The writer keeps only each allocation's latest
PROGRESS in memory and writes them at most every `progress_every` seconds (PROGRESS_WRITE_EVERY),
all in one executemany UPDATE, or sooner on `flush()`/`close()`; a DELETED event carries the
final counters and replaces its allocation's pending PROGRESS, so the final accounting is exact.
After a crash, `close_stale_sessions` at the next start ends the rows left open there with their
last written counters (at most PROGRESS_WRITE_EVERY plus one PROGRESS interval behind), and
audits each like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

from sqlalchemy import Connection, Table, and_, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from callgate.records.audit import AuditLog
from callgate.storage.models import RelaySession, from_unix, utcnow
from callgate.storage.repositories import RelaySessionRepository
from callgate.types import Transport
from callgate.types.events import AllocationEvent, AuthThrottled, EventKind

log = logging.getLogger(__name__)

_STOP = object()
# Pending PROGRESS counters are written at most this often (seconds): what a crash can lose.
PROGRESS_WRITE_EVERY = 10.0
_sessions_table = cast(Table, RelaySession.__table__)
_Item = AllocationEvent | AuthThrottled | threading.Event | object


def audit_session_end(conn: Connection, event: AllocationEvent) -> None:
    """relay.session: who used which relayed address, with how many peers, how much traffic each
    way and for how long — when the allocation ends (DELETED)."""
    if event.kind is not EventKind.DELETED:
        return
    details = {
        "user": event.user,
        "client": f"{event.client[0]}:{event.client[1]}",
        "transport": str(event.transport.value),
        "relay": f"{event.relay[0]}:{event.relay[1]}",
        "peers": len(event.peers),
        "packets_to_peer": event.packets_to_peer,
        "bytes_to_peer": event.bytes_to_peer,
        "packets_to_client": event.packets_to_client,
        "bytes_to_client": event.bytes_to_client,
        "duration_s": round(max(0.0, event.time - event.started), 3),
        "end_reason": event.end_reason,
    }
    obj = f"relay:{event.allocation_id}"
    AuditLog.append_in(conn, "system", "relay.session", obj, details, from_unix(event.time))


def audit_auth_throttled(conn: Connection, event: AuthThrottled) -> None:
    """turn.auth_throttled: one entry per block of an address or username (never the key tried)."""
    details = {
        "scope": event.scope,
        "failures": event.failures,
        "refused_before": event.refused,
        "blocked_s": event.blocked_s,
        "strike": event.strike,
        "address": event.last_address,
        "username": event.last_username[:128],
    }
    obj = f"turn-{event.scope}:{event.key[:128]}"
    AuditLog.append_in(conn, "system", "turn.auth_throttled", obj, details, from_unix(event.time))


def close_stale_sessions(
    sessions: sessionmaker[Session], reason: str = "server-restart", relay_id: str | None = None
) -> int:
    """End the relay sessions a dead server left open, at their last persisted sign of life
    (`updated_at`: the last PROGRESS, permission or refresh) with their last persisted counters,
    each audited as relay.session; how many were closed. With `relay_id` (one relay among
    several), only the sessions that relay wrote: the others' are live."""
    query = select(RelaySession).where(RelaySession.ended_at.is_(None))
    if relay_id is not None:
        query = query.where(RelaySession.relay_id == relay_id)
    with sessions() as session:
        rows = session.scalars(query).all()
        events = [_ended(row, reason) for row in rows]
    if events:
        RelaySessionRepository(sessions, audit_session_end).apply(events)
    return len(events)


def _ended(row: RelaySession, reason: str) -> AllocationEvent:
    last = max(row.updated_at, row.started_at)
    return AllocationEvent(
        kind=EventKind.DELETED,
        allocation_id=row.allocation_id,
        username=row.username,
        user=row.user,
        client=(row.client_ip, row.client_port),
        server=(row.server_ip, row.server_port),
        transport=Transport(row.transport),
        relay=(row.relay_ip, row.relay_port),
        time=last.timestamp(),
        started=row.started_at.timestamp(),
        lifetime=0,
        peers=tuple(json.loads(row.peers or "[]")),
        packets_to_peer=row.packets_to_peer,
        bytes_to_peer=row.bytes_to_peer,
        packets_to_client=row.packets_to_client,
        bytes_to_client=row.bytes_to_client,
        end_reason=reason,
    )


class DbEventSink:
    """An EventSink writing relay sessions to the database from a background thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_queue: int = 100_000,
        batch_max: int = 500,
        on_failure: Callable[[AllocationEvent, SQLAlchemyError], None] | None = None,
        relay_id: str | None = None,
        progress_every: float = PROGRESS_WRITE_EVERY,
    ) -> None:
        # Called from the writer thread for each event that could not be written (disk full…),
        # and once for a failed PROGRESS write (one statement for every allocation it updates):
        # `serve` then refuses allocations and ends the one whose creation went unrecorded.
        self.on_failure = on_failure
        self._sessions = sessions
        self._repo = RelaySessionRepository(sessions, audit_session_end, relay_id)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)
        self._batch_max = batch_max
        self._progress_every = progress_every
        # Each allocation's latest PROGRESS not yet written (writer thread only).
        self._progress: dict[str, AllocationEvent] = {}
        self._progress_due: float | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="relay-session-writer", daemon=True)
        self._thread.start()

    def emit(self, event: AllocationEvent) -> None:
        self._enqueue(event)

    def auth_throttled(self, event: AuthThrottled) -> None:
        self._enqueue(event)

    def _enqueue(self, item: AllocationEvent | AuthThrottled) -> None:
        """Queue `item` for the writer; counted as dropped once closed or while the queue is full."""
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted before this call is written; False on timeout."""
        if not self._thread.is_alive():
            return self._queue.empty()
        marker = threading.Event()
        self._queue.put(marker, timeout=timeout)
        return marker.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then stop the writer. Later emits are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
        if self.dropped:
            log.warning("relay session recorder dropped %d events", self.dropped)

    async def aflush(self) -> bool:
        """`flush()` without blocking the event loop."""
        return await asyncio.to_thread(self.flush)

    async def aclose(self) -> None:
        """`close()` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._next_batch()
            events = []
            for item in batch:
                if not isinstance(item, AllocationEvent):
                    continue
                if item.kind is EventKind.PROGRESS:
                    self._progress[item.allocation_id] = item  # cumulative: the latest serves
                    if self._progress_due is None:
                        self._progress_due = time.monotonic() + self._progress_every
                    continue
                if item.kind is EventKind.DELETED:
                    self._progress.pop(item.allocation_id, None)  # its counters are final
                events.append(item)
            if events:
                self._write(events)
            for item in batch:
                if isinstance(item, AuthThrottled):
                    self._write_throttled(item)
            flushing = any(isinstance(item, threading.Event) or item is _STOP for item in batch)
            due = self._progress_due is not None and time.monotonic() >= self._progress_due
            if flushing or due:
                self._write_progress()
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
                elif item is _STOP:
                    stop = True

    def _next_batch(self) -> list[_Item]:
        """What is queued (waiting for the first item no later than pending PROGRESS is due)."""
        timeout = None
        if self._progress_due is not None:
            timeout = max(0.0, self._progress_due - time.monotonic())
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < self._batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_progress(self) -> None:
        """The pending PROGRESS counters of open rows, one UPDATE statement for all of them.
        Counters only grow (never moved backwards); ended rows are left as their end wrote them."""
        pending, self._progress, self._progress_due = self._progress, {}, None
        if not pending:
            return
        t = _sessions_table
        now = utcnow()
        params = [
            {
                "a_id": e.allocation_id,
                "p_peer": e.packets_to_peer,
                "b_peer": e.bytes_to_peer,
                "p_client": e.packets_to_client,
                "b_client": e.bytes_to_client,
                "now": now,
            }
            for e in pending.values()
        ]
        statement = (
            update(t)
            .where(
                and_(
                    t.c.allocation_id == bindparam("a_id"),
                    t.c.ended_at.is_(None),
                    t.c.packets_to_peer <= bindparam("p_peer"),
                    t.c.packets_to_client <= bindparam("p_client"),
                )
            )
            .values(
                packets_to_peer=bindparam("p_peer"),
                bytes_to_peer=bindparam("b_peer"),
                packets_to_client=bindparam("p_client"),
                bytes_to_client=bindparam("b_client"),
                updated_at=bindparam("now"),
            )
        )
        try:
            with self._sessions.begin() as session:
                session.connection().execute(statement, params)
            self.written += len(params)
        except SQLAlchemyError as exc:
            self.write_errors += 1
            log.error("relay session progress of %d allocations not recorded: %s", len(params), exc)
            if self.on_failure is not None:  # one failed write, told once (with any of its events)
                self.on_failure(next(iter(pending.values())), exc)

    def _write(self, events: Sequence[AllocationEvent]) -> None:
        try:
            self._repo.apply(events)
            self.written += len(events)
            return
        except SQLAlchemyError as exc:
            log.warning("relay session batch failed (%s); retrying one by one", exc)
        for event in events:  # one bad event must not cost the others
            try:
                self._repo.apply([event])
                self.written += 1
            except SQLAlchemyError as exc:
                self.write_errors += 1
                log.error("relay session %s not recorded: %s", event.allocation_id, exc)
                if self.on_failure is not None:
                    self.on_failure(event, exc)

    def _write_throttled(self, event: AuthThrottled) -> None:
        try:
            with self._sessions.begin() as session:
                audit_auth_throttled(session.connection(), event)
        except SQLAlchemyError as exc:
            self.write_errors += 1
            log.error("turn.auth_throttled audit entry not written: %s", exc)
