"""CPU the call records cost a signaling node per call attempt, without the network around them.

Runs the call recorder (records/call_recorder.py: the writer thread, its group-committed batches,
the CDR writes and the audit chain) in this process against a SQLite file and, when PostgreSQL's
server programs are installed, a throwaway PostgreSQL server started with its durable defaults
(fsync, synchronous_commit on), as `cluster_load.py` does. Each round queues `--burst` calls'
opens, waits until they are committed, then their answers, then their ends — the three writes of
an attempt, each batch holding `--burst` calls as a busy node's do. Printed: this process's CPU
(all threads: the writer does the work; the main thread waits) per call, wall time, and the
records check (one finalized CDR per call with its audit index, three audit entries per call, the
chain verified).

    .venv/bin/python bench/records_writer.py                  # SQLite and PostgreSQL
    .venv/bin/python bench/records_writer.py --backend sqlite --calls 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.db_backends (PostgreSQL)

from callgate.records.audit import AuditLog
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_types import new_call_id
from callgate.records.quality_store import QualityRepository
from callgate.storage.db import open_store


def run(url: str, calls: int, burst: int) -> tuple[float, float, bool]:
    """(CPU s, wall s, records check passed) for `calls` calls in rounds of `burst`."""
    store = open_store(url)
    cdrs = CdrRepository(store, node_id="bench")
    recorder = CallRecorder(cdrs, QualityRepository(store.sessions))
    recorder.settled().result(30)  # the writer's connection is open before the clock starts
    start = datetime.now(UTC)
    written: list[str] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for first in range(0, calls, burst):
            ids = [new_call_id() for _ in range(min(burst, calls - first))]
            for n, call_id in enumerate(ids):
                opened = CallOpen(
                    call_id, f"u{n}", "bob", start, caller_device="d1", node_id="bench"
                )
                recorder.open(opened, ringing_devices=1, relay_only=False)
            recorder.settled().result(60)
            for call_id in ids:
                recorder.answered(call_id, "bob", "d2", start, answer_at=start)
            recorder.settled().result(60)
            end = start + timedelta(seconds=1)
            for n, call_id in enumerate(ids):
                recorder.ended(CallEnd(call_id, end, "answered", "hangup", "caller", f"u{n}", 1.0))
            recorder.settled().result(60)
            written += ids
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        recorder.close()
    log = AuditLog(store)
    invites = {e.object: e.seq for e in log.iter_entries() if e.action == "call.invite"}
    ok = log.size() == 3 * len(written) and log.verify(None).ok
    for call_id in written:
        record = cdrs.get(call_id)
        ok = ok and record is not None and record.disposition == "answered"
        ok = ok and record is not None and record.audit_index == invites.get(f"call:{call_id}")
    store.close()
    return cpu, wall, ok


def report(backend: str, calls: int, cpu: float, wall: float, ok: bool) -> None:
    print(f"{backend:<11}{calls:>7}{1000 * cpu / calls:>14.3f}{cpu:>8.2f}{wall:>8.2f}"
          f"  {'ok' if ok else 'MISMATCH'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--burst", type=int, default=30, help="calls per round (batch size)")
    args = parser.parse_args()
    if args.calls < 1 or args.burst < 1:
        parser.error("--calls and --burst ≥ 1")
    print(f"{'backend':<11}{'calls':>7}{'CPU ms/call':>14}{'CPU s':>8}{'wall s':>8}  records")
    good = True
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            cpu, wall, ok = run(f"sqlite:///{folder}/callgate.db", args.calls, args.burst)
        report("sqlite", args.calls, cpu, wall, ok)
        good = good and ok
    if args.backend in ("both", "postgresql"):
        from tests.db_backends import PgServer, pg_bindir

        bindir = pg_bindir()
        if bindir is None:
            print("postgresql: server programs not found (apt-get install postgresql)")
        else:
            server = PgServer(bindir, durable=True).start()
            try:
                cpu, wall, ok = run(server.new_database(None), args.calls, args.burst)
            finally:
                server.stop()
            report("postgresql", args.calls, cpu, wall, ok)
            good = good and ok
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
