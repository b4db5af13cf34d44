"""One writer thread for call records, with group commit.

Record writes must happen in the order calls produce them (a CDR row before its update, before
its final state), off the event loop, and fast enough for hundreds of call attempts a second.
The writer takes everything queued since its last commit and writes it in one transaction:
a burst of invites costs one commit, not one each. If a batch fails, its operations are retried
one by one so a single bad write loses nothing else; failures are logged, never raised into the
signaling path.

`submit` returns a future done when the write is committed. `post` queues a write without a
future and returns its number: the writer counts the jobs it has finished (`done`) and, after each
batch that finishes a number someone asked for (`want`), calls the `progress` callback once —
the signaling hub waits that way, one wake-up per batch for all its waiters, instead of one
future and one cross-thread call per write. A posted write that fails is logged, counted and
its number kept in `failed` until `take_failure` collects it.

While the database is unreachable (PostgreSQL restarted, a network cut), the batch is retried,
in order, with a growing pause, for up to `retry_for` seconds: nothing queued meanwhile is lost or
reordered. A write given a `max_wait` (a new call's record: the caller is waiting) fails instead
once it has waited that long, so no call is placed late; a posted one that fails so is announced
at once (`gave_up`), not when its batch is over.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from callgate.errors import CallgateError

log = logging.getLogger(__name__)

ConnectionOp = Callable[[Connection], object]
StandaloneOp = Callable[[], object]
RETRY_FOR = 120.0  # seconds writes are retried while the database is unreachable
_FIRST_PAUSE, _LONGEST_PAUSE = 0.1, 2.0


def _unreachable(exc: Exception, dialect: str) -> bool:
    """A database server could not be reached (as opposed to refusing this write). SQLite is
    never unreachable: its errors (disk full, locked past busy_timeout) fail at once."""
    if dialect == "sqlite":
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


class RecordWriteError(CallgateError):
    """A record could not be written (details in the log)."""


@dataclass(slots=True)
class _Job:
    op: ConnectionOp | StandaloneOp
    in_batch: bool  # runs inside the shared transaction (takes a Connection)
    done: Future[None] | None  # None: posted (waited for by number, if at all)
    number: int
    report: bool = False  # posted, and its failure is kept in `failed`
    fail_after: float | None = None  # monotonic time after which it fails rather than waits


class RecordWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 512,
        name: str = "callgate-records",
        batch: Callable[[Connection], AbstractContextManager[object]] | None = None,
        retry_for: float = RETRY_FOR,
    ):
        """`batch(conn)`, if given, wraps the jobs of each group-committed transaction (the
        call recorder defers the audit inserts to its end: records/audit.py)."""
        self._engine = engine
        self._conn: Connection | None = None  # the writer thread's (see `_connection`)
        self._batch = batch
        self._max_batch = max_batch
        self._retry_for = retry_for
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._numbers = itertools.count(1)
        self._order = threading.Lock()  # numbers follow queue order whichever thread queues
        self.batches = 0
        self.failures = 0
        self.retries = 0  # batches tried again because the database was unreachable
        self.queued = 0  # the number of the last job queued
        self.done = 0  # every job numbered up to this one has finished (committed or failed)
        self.want = 0  # the highest number someone waits for (see `progress`)
        self.failed: set[int] = set()  # reported posted jobs that failed, until `take_failure`
        # Called on the writer thread after a batch that finished `want`, with `done`.
        self.progress: Callable[[int], None] | None = None
        # Called on the writer thread when a reported posted job fails, with its number (its
        # batch may go on being retried: a waiter need not wait for the batch).
        self.gave_up: Callable[[int], None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: ConnectionOp, *, max_wait: float | None = None) -> Future[None]:
        """Run `op(conn)` inside the next group-committed transaction; with `max_wait`, fail
        (RecordWriteError) rather than be written more than that many seconds from now."""
        return self._put(op, True, max_wait)

    def post(self, op: ConnectionOp, *, report: bool = False, max_wait: float | None = None) -> int:
        """`submit` without a future; the job's number (see `done`, `want`). With `report`, a
        failure is kept for `take_failure` (ask for it, or the number stays in `failed`)."""
        return self._enqueue(op, True, None, report, max_wait)

    def submit_standalone(self, op: StandaloneOp) -> Future[None]:
        """Run `op()` in order with the others, outside the shared transaction."""
        return self._put(op, False)

    def post_standalone(self, op: StandaloneOp) -> int:
        """`submit_standalone` without a future; the job's number."""
        return self._enqueue(op, False, None, False)

    def take_failure(self, number: int) -> bool:
        """Whether posted job `number` failed (asked once: the record is then forgotten)."""
        try:
            self.failed.remove(number)
        except KeyError:
            return False
        return True

    def _put(
        self, op: ConnectionOp | StandaloneOp, in_batch: bool, max_wait: float | None = None
    ) -> Future[None]:
        done: Future[None] = Future()
        self._enqueue(op, in_batch, done, False, max_wait)
        return done

    def _enqueue(
        self,
        op: ConnectionOp | StandaloneOp,
        in_batch: bool,
        done: Future[None] | None,
        report: bool,
        max_wait: float | None = None,
    ) -> int:
        fail_after = None if max_wait is None else time.monotonic() + max_wait
        with self._order:
            number = self.queued = next(self._numbers)
            self._queue.put(_Job(op, in_batch, done, number, report, fail_after))
        return number

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._drop_connection()
                return
            jobs = [first]
            stop = False
            while len(jobs) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._write(jobs)
            self._finished(jobs[-1].number)
            if stop:
                self._drop_connection()
                return

    def _finished(self, number: int) -> None:
        """Publish progress, then tell the waiter if this batch reached what it wants. (`done` is
        set before `want` is read, and a waiter sets `want` before it reads `done`: either this
        thread sees the new `want`, or the waiter sees the new `done` and does not wait.)"""
        before, self.done = self.done, max(self.done, number)
        callback = self.progress
        if callback is not None and self.want > before:
            callback(self.done)

    def _write(self, jobs: list[_Job]) -> None:
        """Consecutive in-batch jobs share one transaction; standalone jobs run between them."""
        group: list[_Job] = []
        for job in jobs:
            if job.in_batch:
                group.append(job)
                continue
            self._commit(group)
            group = []
            self._run_standalone(job)
        self._commit(group)

    def _commit(self, group: list[_Job]) -> None:
        give_up, pause = time.monotonic() + self._retry_for, _FIRST_PAUSE
        group = self._not_overdue(group)
        while group:
            self.batches += 1
            try:
                conn = self._connection()
                with conn.begin():
                    around = self._batch(conn) if self._batch is not None else nullcontext()
                    with around:
                        for job in group:
                            job.op(conn)  # type: ignore[call-arg]
            except Exception as exc:
                self._drop_connection()
                if not _unreachable(exc, self._engine.dialect.name):
                    self._failed_batch(group)
                elif time.monotonic() < give_up:
                    if pause == _FIRST_PAUSE:
                        log.warning("database unreachable (%s); retrying record writes", exc)
                    self.retries += 1
                    time.sleep(pause)
                    pause = min(2 * pause, _LONGEST_PAUSE)
                    group = self._not_overdue(group)
                    continue
                else:  # unreachable all along: every write of the batch is lost, and logged
                    for job in group:
                        self._fail(job)
                return
            if pause != _FIRST_PAUSE:
                log.warning("database reachable again: record writes resumed")
            for job in group:
                if job.done is not None:
                    job.done.set_result(None)
            return

    def _failed_batch(self, group: list[_Job]) -> None:
        if len(group) == 1:
            self._fail(group[0])
            return
        log.warning("record batch of %d failed; retrying one by one", len(group))
        for job in group:
            self._commit([job])

    def _not_overdue(self, group: list[_Job]) -> list[_Job]:
        """The jobs that may still wait; the others fail now."""
        now = time.monotonic()
        for job in group:
            if job.fail_after is not None and now >= job.fail_after:
                self._fail(job)
        return [job for job in group if job.fail_after is None or now < job.fail_after]

    def _connection(self) -> Connection:
        """The writer's own connection, kept between batches: no pool checkout and liveness
        ping per batch (a round trip each on PostgreSQL). Dropped after any failure."""
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run_standalone(self, job: _Job) -> None:
        try:
            job.op()  # type: ignore[call-arg]
        except Exception:
            self._fail(job)
            return
        if job.done is not None:
            job.done.set_result(None)

    def _fail(self, job: _Job) -> None:
        """Log and count; the submitter decides what a failed write means (fail closed for a
        new CDR: the call is not placed)."""
        self.failures += 1
        log.exception("record write failed: %r", job.op)
        if job.done is not None:
            job.done.set_exception(RecordWriteError("record write failed"))
        elif job.report:
            self.failed.add(job.number)
            callback = self.gave_up
            if callback is not None:
                callback(job.number)
