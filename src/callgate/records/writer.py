"""One writer thread for call records, with group commit.

Record writes must happen in the order calls produce them (a CDR row before its update, before
its final state), off the event loop, and fast enough for hundreds of call attempts a second.
The writer takes everything queued since its last commit and writes it in one transaction:
a burst of invites costs one commit, not one each. If a batch fails, its operations are retried
one by one so a single bad write loses nothing else; failures are logged, never raised into the
signaling path.

While the database is unreachable (PostgreSQL restarted, a network cut), the batch is retried,
in order, with a growing pause, for up to `retry_for` seconds: nothing queued meanwhile is lost or
reordered. A write given a `max_wait` (a new call's record: the caller is waiting) fails instead
once it has waited that long, so no call is placed late.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
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
    done: Future[None]
    fail_after: float | None = None  # monotonic time after which it fails rather than waits


class RecordWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 512,
        name: str = "callgate-records",
        retry_for: float = RETRY_FOR,
    ):
        self._engine = engine
        self._max_batch = max_batch
        self._retry_for = retry_for
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.failures = 0
        self.retries = 0  # batches tried again because the database was unreachable

    def submit(self, op: ConnectionOp, *, max_wait: float | None = None) -> Future[None]:
        """Run `op(conn)` inside the next group-committed transaction; with `max_wait`, fail
        (RecordWriteError) rather than be written more than that many seconds from now."""
        return self._put(op, True, max_wait)

    def submit_standalone(self, op: StandaloneOp) -> Future[None]:
        """Run `op()` in order with the others, outside the shared transaction."""
        return self._put(op, False)

    def _put(
        self, op: ConnectionOp | StandaloneOp, in_batch: bool, max_wait: float | None = None
    ) -> Future[None]:
        done: Future[None] = Future()
        fail_after = None if max_wait is None else time.monotonic() + max_wait
        self._queue.put(_Job(op, in_batch, done, fail_after))
        return done

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
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
            if stop:
                return

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
                with self._engine.begin() as conn:
                    for job in group:
                        job.op(conn)  # type: ignore[call-arg]
            except Exception as exc:
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

    def _run_standalone(self, job: _Job) -> None:
        try:
            job.op()  # type: ignore[call-arg]
        except Exception:
            self._fail(job)
            return
        job.done.set_result(None)

    def _fail(self, job: _Job) -> None:
        """Log and count; the submitter decides what a failed write means (fail closed for a
        new CDR: the call is not placed)."""
        self.failures += 1
        log.exception("record write failed: %r", job.op)
        job.done.set_exception(RecordWriteError("record write failed"))
