"""One writer thread for call records, with group commit.

Record writes must happen in the order calls produce them (a CDR row before its update, before
its final state), off the event loop, and fast enough for hundreds of call attempts a second.
The writer takes everything queued since its last commit and writes it in one transaction:
a burst of invites costs one commit, not one each. If a batch fails, its operations are retried
one by one so a single bad write loses nothing else; failures are logged, never raised into the
signaling path.

`submit` returns a future done when the write is committed (the hub awaits a new call's row and,
before it tells anyone a call's outcome, the commit of everything queued before: see
`CallRecorder.committed`); `post` queues a write nobody waits for, without the cost of a future.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from callgate.errors import CallgateError

log = logging.getLogger(__name__)

ConnectionOp = Callable[[Connection], object]
StandaloneOp = Callable[[], object]


class RecordWriteError(CallgateError):
    """A record could not be written (details in the log)."""


@dataclass(slots=True)
class _Job:
    op: ConnectionOp | StandaloneOp
    in_batch: bool  # runs inside the shared transaction (takes a Connection)
    done: Future[None] | None  # None: nobody waits for it (`post`)


class RecordWriter:
    def __init__(self, engine: Engine, *, max_batch: int = 512, name: str = "callgate-records"):
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.failures = 0

    def submit(self, op: ConnectionOp) -> Future[None]:
        """Run `op(conn)` inside the next group-committed transaction."""
        return self._put(op, True)

    def post(self, op: ConnectionOp) -> None:
        """`submit` for a write nobody waits for (a failure is only logged)."""
        self._queue.put(_Job(op, True, None))

    def submit_standalone(self, op: StandaloneOp) -> Future[None]:
        """Run `op()` in order with the others, outside the shared transaction."""
        return self._put(op, False)

    def post_standalone(self, op: StandaloneOp) -> None:
        """`submit_standalone` for a write nobody waits for."""
        self._queue.put(_Job(op, False, None))

    def _put(self, op: ConnectionOp | StandaloneOp, in_batch: bool) -> Future[None]:
        done: Future[None] = Future()
        self._queue.put(_Job(op, in_batch, done))
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
        if not group:
            return
        self.batches += 1
        try:
            with self._engine.begin() as conn:
                for job in group:
                    job.op(conn)  # type: ignore[call-arg]
        except Exception:
            if len(group) == 1:
                self._fail(group[0])
                return
            log.warning("record batch of %d failed; retrying one by one", len(group))
            for job in group:
                self._commit([job])
            return
        for job in group:
            if job.done is not None:
                job.done.set_result(None)

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
