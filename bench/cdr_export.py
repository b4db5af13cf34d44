"""CDR export of 1 M rows: time and peak memory of the streamed export, beside sqlite3's own dump.

On a fresh SQLite data directory (migrated as `callgate serve` opens it) the script bulk-inserts
`--rows` call records (default 1 M; one transaction, executemany), then measures, each in its own
process so that peak RSS (`ru_maxrss` from wait4) belongs to that export alone:

1. the library, CSV and JSON Lines: `cdr_export_chunks` (keyset chunks of 5,000 rows read from the
   DBAPI cursor, converted column by column, export_rows.py) →
   `render_cdrs` → a byte-counting sink, through `audited_export` (two audit entries), exactly
   what GET /api/cdrs/export streams;
2. the CLI: `callgate cdr export --format csv -o /dev/null` (process start-up, the progress bar's
   count query and the audit entries included);
3. the reference: `sqlite3 -csv -header DB "SELECT * FROM calls ORDER BY invite_at DESC, id DESC"`
   (Debian's sqlite3 CLI, C, one cursor) into /dev/null — the same rows in the same order.

    .venv/bin/python bench/cdr_export.py
    .venv/bin/python bench/cdr_export.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = [f"user{i:03d}" for i in range(200)]
DISPOSITIONS = ("answered",) * 7 + ("no-answer", "busy", "failed", "rejected", "cancelled")


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME storage format


def seed(db: Path, rows: int) -> float:
    """`rows` plausible CDRs, one a few seconds after the other, in one transaction."""
    start = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")

    def row(i: int) -> tuple[object, ...]:
        invite = T0 + timedelta(seconds=i * 3)
        answered = DISPOSITIONS[i % len(DISPOSITIONS)] == "answered"
        end = invite + timedelta(seconds=30 + i % 600)
        return (
            f"{i:032x}", USERS[i % 200], USERS[(i * 7 + 1) % 200], "internal",
            _stamp(invite), _stamp(invite + timedelta(seconds=1)),
            _stamp(invite + timedelta(seconds=4)) if answered else None, _stamp(end),
            float(26 + i % 600) if answered else None, DISPOSITIONS[i % len(DISPOSITIONS)],
            "caller", "hangup" if answered else "no-answer", "relay/host" if answered else None,
            "opus" if answered else None, "dtls-srtp", f"10.0.{i % 250}.{i % 199}:5{i % 999}",
            "[]", "[]", 0, _stamp(end),
        )  # fmt: skip

    insert = (
        "INSERT INTO calls (call_id, caller_user, callee_user, direction, invite_at, ring_at, "
        "answer_at, end_at, duration_s, disposition, ended_by, reason, media_path, codec, "
        "encryption, caller_address, relay_allocation_ids, recording_ids, legal_hold, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    with conn:
        batch = 50_000
        for first in range(0, rows, batch):
            conn.executemany(insert, (row(i) for i in range(first, min(rows, first + batch))))
    conn.close()
    return time.perf_counter() - start


def child(data_dir: Path, fmt: str) -> None:
    """One export through the library into a counting sink; prints a JSON line."""
    from callgate.records.audit import AuditLog
    from callgate.records.export import Counted, audited_export, cdr_export_chunks, render_cdrs
    from callgate.records.query import CdrFilter
    from callgate.storage.db import open_store, sqlite_url

    store = open_store(sqlite_url(data_dir))
    start = time.perf_counter()
    fmt_ = "csv" if fmt == "csv" else "jsonl"
    rows = cdr_export_chunks(store.engine, CdrFilter())
    size = 0
    counted: list[Counted] = []

    def chunks(c: Counted) -> Iterator[bytes]:
        counted.append(c)
        return render_cdrs(c, fmt_)

    log = AuditLog(store)
    details = {"format": fmt}
    for chunk in audited_export(log, "bench", "export.cdr", details, chunks, rows, chunked=True):
        size += len(chunk)
    seconds = time.perf_counter() - start
    store.close()
    print(json.dumps({"rows": counted[0].count, "bytes": size, "seconds": seconds}))


def measure(
    command: list[str], stdout: int | None = subprocess.PIPE
) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS in KiB, stdout) of one child process. CPU seconds
    (user + system) stay meaningful on a loaded machine, where wall time does not."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)
    out = b""
    if proc.stdout is not None:
        out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed: {err.decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.decode()


def line(name: str, rows: int, seconds: float, cpu: float, rss_kib: int, note: str = "") -> None:
    print(
        f"{name:<40} {seconds:7.2f} s wall {cpu:7.2f} s CPU {rows / cpu:>9,.0f} rows/CPU-s"
        f"  peak RSS {rss_kib / 1024:6.1f} MiB {note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2, metavar=("DATA_DIR", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return
    sqlite = shutil.which("sqlite3")
    with tempfile.TemporaryDirectory(prefix="cdr-export-") as tmp:
        data_dir = Path(tmp) / "data"
        from callgate.storage.db import DB_FILENAME, open_store, sqlite_url

        open_store(sqlite_url(data_dir)).close()
        db = data_dir / DB_FILENAME
        seeded = seed(db, args.rows)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"rows: {args.rows:,} seeded in {seeded:.1f} s (SQLite {db.stat().st_size / 1e6:,.0f} MB)"
        )
        print(f"machine: {os.cpu_count()} CPUs, load average {load}")
        imports = "import callgate.records.export, callgate.records.query, callgate.storage.db"
        _, _, idle_rss, _ = measure([sys.executable, "-c", imports])
        print(
            f"baseline: python + the imports, nothing exported: peak RSS {idle_rss / 1024:.1f} MiB"
        )
        for fmt in ("csv", "jsonl"):
            seconds, cpu, rss, out = measure(
                [sys.executable, __file__, "--child", str(data_dir), fmt]
            )
            result = json.loads(out)
            assert result["rows"] == args.rows, result
            note = f"({result['bytes'] / 1e6:,.0f} MB; export alone {result['seconds']:.2f} s)"
            line(f"library, {fmt} (what the API streams)", args.rows, seconds, cpu, rss, note)
        cli = ROOT / ".venv" / "bin" / "callgate"
        command = [
            str(cli),
            "cdr",
            "export",
            "--format",
            "csv",
            "-o",
            "/dev/null",
            "--data-dir",
            str(data_dir),
        ]
        seconds, cpu, rss, _ = measure(command)
        line("callgate cdr export --format csv", args.rows, seconds, cpu, rss)
        if sqlite is None:
            print("reference: sqlite3 CLI not installed (apt-get install sqlite3)")
            return
        query = "SELECT * FROM calls ORDER BY invite_at DESC, id DESC"
        with open(os.devnull, "wb") as sink:
            seconds, cpu, rss, _ = measure(
                [sqlite, "-csv", "-header", str(db), query], stdout=sink.fileno()
            )
        line("reference: sqlite3 -csv (C, one cursor)", args.rows, seconds, cpu, rss)


if __name__ == "__main__":
    main()
