"""Audit log: append rate and `audit verify` time for 1 M entries, beside the floors in one run.

On a fresh SQLite data directory (WAL, synchronous=NORMAL, as `callgate serve` opens it):

1. append rate, one entry per transaction (`AuditLog.append`, as a sign-in or an admin change
   writes it) for `--single` entries;
2. append rate in batches (`AuditLog.append_many`, one head read and one multi-row insert per
   batch, as a bulk import would) — this also seeds the log up to `--entries` (default 1 M);
3. `AuditLog.verify` over the whole log (what `callgate audit verify` runs), and the CLI itself
   in a subprocess (`callgate audit verify --json`, process start-up included);
4. the floors, same rows: reading them through sqlite3 without hashing; SHA-256 over the same
   body bytes in a Python loop (chained as verify does, nothing read); `sha256sum` and `openssl
   dgst -sha256` over those bytes written to a file (one hash over all of it: the raw speed of the
   hash, which no per-entry chain can beat).

    .venv/bin/python bench/audit_chain.py
    .venv/bin/python bench/audit_chain.py --entries 200000 --single 1000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callgate.records.audit import AuditLog, NewEntry
from callgate.records.audit_chain import body_json
from callgate.storage.db import DB_FILENAME, open_store, sqlite_url

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def entry(i: int) -> NewEntry:
    """A realistic mix: call events with a few details, sign-ins, relay summaries."""
    kind = i % 4
    if kind == 0:
        return ("system", "call.invite", f"call:c{i:08d}", {"caller": f"u{i % 97}", "callee": "b"})
    if kind == 1:
        return ("system", "call.answered", f"call:c{i - 1:08d}", {"media_path": "relay"})
    if kind == 2:
        details = {"disposition": "answered", "reason": "hangup", "duration_s": 61.2}
        return ("system", "call.ended", f"call:c{i - 2:08d}", details)
    return (f"u{i % 97}", "auth.login", f"user:u{i % 97}", {"client": "127.0.0.1"})


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def bench_append_single(log: AuditLog, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        actor, action, obj, details = entry(i)
        log.append(actor, action, obj, details)
    return time.perf_counter() - start


def seed_batches(log: AuditLog, total: int, batch: int) -> float:
    start = time.perf_counter()
    done = log.size()
    while done < total:
        n = min(batch, total - done)
        log.append_many([entry(done + k) for k in range(n)], at=T0 + timedelta(seconds=done))
        done += n
    return time.perf_counter() - start


def floor_read(db: Path) -> float:
    start = time.perf_counter()
    with sqlite3.connect(db) as conn:
        cursor = conn.execute(
            "SELECT seq, replace(at, ' ', 'T') || '+00:00', actor, action, object, details,"
            " prev_hash, hash FROM audit_entries ORDER BY seq"
        )
        while cursor.fetchmany(20_000):
            pass
    return time.perf_counter() - start


def bodies(db: Path) -> list[bytes]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, replace(at, ' ', 'T') || '+00:00', actor, action, object, details"
            " FROM audit_entries ORDER BY seq"
        ).fetchall()
    return [body_json(*row) for row in rows]


def floor_hash_loop(chunks: list[bytes]) -> float:
    sha256, head = hashlib.sha256, bytes(32)
    start = time.perf_counter()
    for body in chunks:
        head = sha256(head + body).digest()
    return time.perf_counter() - start


def floor_tool(argv: list[str], path: Path) -> float | None:
    if shutil.which(argv[0]) is None:
        return None
    start = time.perf_counter()
    subprocess.run([*argv, str(path)], check=True, stdout=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - start


def cli_verify(data: Path) -> tuple[float, dict[str, object]]:
    exe = ROOT / ".venv" / "bin" / "callgate"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "callgate"]
    start = time.perf_counter()
    done = subprocess.run(
        [*argv, "audit", "verify", "--json", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - start
    return seconds, json.loads(done.stdout)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the machine may be
    shared: CPU time shows the work, wall time what it took under the load at hand)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=2_000, help="entries appended one by one")
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="callgate-bench-audit-") as tmp:
        data = Path(tmp) / "data"
        store = open_store(sqlite_url(data))
        log = AuditLog(store)
        single = bench_append_single(log, args.single)
        seeded = log.size()
        batched = seed_batches(log, args.entries, args.batch)
        n = log.size()
        db = data / DB_FILENAME
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"entries: {n:,} (SQLite {db.stat().st_size / 1e6:,.0f} MB)")
        print(f"machine: {os.cpu_count()} CPUs, load average {load}")
        print(f"append, one per transaction: {rate(args.single, single)}")
        print(f"append_many, {args.batch:,} per transaction: {rate(n - seeded, batched)}")

        for workers in (1, 1, os.cpu_count() or 1):  # the first pass may read from disk
            start, cpu = time.perf_counter(), cpu_seconds()
            result = log.verify(None, workers=workers)
            verify_s, verify_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            assert result.ok and result.size == n, result
            print(
                f"verify (AuditLog.verify, {workers} process(es)): {verify_s:6.2f} s"
                f"  {rate(n, verify_s)}  CPU {verify_cpu:.2f} s"
            )
        store.close()
        cpu = cpu_seconds()
        cli_s, cli = cli_verify(data)
        assert cli["ok"] is True, cli
        print(
            f"verify (callgate audit verify): {cli_s:6.2f} s  CPU {cpu_seconds() - cpu:.2f} s"
            " (process start-up included)"
        )

        read_s = floor_read(db)
        chunks = bodies(db)
        hash_s = floor_hash_loop(chunks)
        blob = Path(tmp) / "bodies.bin"
        blob.write_bytes(b"".join(chunks))
        size_mb = blob.stat().st_size / 1e6
        print(f"floor: read the rows (sqlite3, no hashing): {read_s:6.2f} s")
        print(f"floor: chained SHA-256 of the same bodies in Python: {hash_s:6.2f} s")
        for name, argv in (("sha256sum", ["sha256sum"]), ("openssl", ["openssl", "dgst"])):
            seconds = floor_tool([*argv, "-sha256"] if name == "openssl" else argv, blob)
            shown = f"{seconds:6.2f} s" if seconds is not None else "not installed"
            print(f"floor: {name} over the {size_mb:,.0f} MB of bodies (one hash): {shown}")


if __name__ == "__main__":
    main()
