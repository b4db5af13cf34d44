"""Verifying the stored audit chain fast: spans of entries read through raw database cursors and
checked independently (audit_chain.check_span), in worker processes when the log is large.

Why it is fast: no ORM objects and no datetime parsing per row (the database formats `at` as the
canonical time string), the stored canonical `details` text is hashed as it is
(audit_chain.body_json), and on machines with several CPUs spans of SPAN entries are checked in
worker processes at once — each entry is checked against the stored hash of the one before it, so
spans need nothing from each other.

Completeness: the log is taken to hold `count(*)` entries, 1..N, read as spans of seq ranges; a
row the ranges cannot see (a seq outside 1..N, or not an integer) leaves some seq in 1..N missing,
which its span reports. Entries appended while verifying are not looked at.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from sqlalchemy import Engine, create_engine

from callgate.records.audit_chain import (
    GENESIS,
    Row,
    SpanResult,
    VerifyResult,
    check_span,
    combine,
    signed_heads,
)
from callgate.records.audit_purge import anchor_recorded

SPAN = 50_000  # entries per span (one worker task, one progress step)
FETCH = 20_000  # rows per fetchmany
PARALLEL_MIN = 200_000  # worker processes from this many entries on, when CPUs are idle:
MAX_WORKERS = 8  # a worker's start-up (imports) costs about a CPU-second, which only idle CPUs
# win back (bench/audit_chain.py, 1 M entries on 2 CPUs: 3.5 s with one process, 2.8 s with two
# when idle; 10 s against 6 s with two when the machine is already busy).


def default_workers(total: int) -> int:
    """One process per CPU for a large log on a machine whose CPUs are mostly idle (1-minute load
    average below half the CPUs), else one."""
    cpus = os.cpu_count() or 1
    if total < PARALLEL_MIN or cpus < 2:
        return 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 1
    return min(cpus, MAX_WORKERS) if load < cpus / 2 else 1


_AT_SQL = {
    # SQLAlchemy keeps "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) as text in SQLite.
    "sqlite": "replace(at, ' ', 'T') || '+00:00'",
    "postgresql": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
}
_ROWS_SQL = (
    "SELECT seq, {at}, actor, action, object, details, prev_hash, hash FROM audit_entries"
    " WHERE seq >= {p} AND seq <= {p} ORDER BY seq"
)
_HASH_SQL = "SELECT hash FROM audit_entries WHERE seq = {p}"


def supported(engine: Engine) -> bool:
    return engine.dialect.name in _AT_SQL


def _queries(engine: Engine) -> tuple[str, str]:
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    return _ROWS_SQL.format(at=_AT_SQL[engine.dialect.name], p=mark), _HASH_SQL.format(p=mark)


def check_stored_span(
    engine: Engine,
    lo: int,
    hi: int,
    heads: Mapping[int, list[str]],
    first_prev: str | None = None,
) -> SpanResult:
    """check_span over the stored entries lo..hi, read in one transaction of a raw connection.
    `first_prev`: the hash entry lo - 1 had, when that entry is gone (GENESIS or a purge anchor)."""
    rows_sql, hash_sql = _queries(engine)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if first_prev is not None:
            prev = first_prev
        elif lo == 1:
            prev = GENESIS
        else:
            cursor.execute(hash_sql, (lo - 1,))
            found = cursor.fetchone()
            prev = str(found[0]) if found is not None else ""  # its own span reports it missing
        cursor.execute(rows_sql, (lo, hi))

        def rows() -> Iterator[Row]:
            while batch := cursor.fetchmany(FETCH):
                yield from cast(list[Row], batch)

        return check_span(rows(), lo, hi, prev, heads)
    finally:
        raw.close()


_worker_engine: Engine | None = None


def _worker_init(url: str) -> None:
    global _worker_engine
    _worker_engine = create_engine(url)


def _worker_span(
    lo: int, hi: int, heads: dict[int, list[str]], first_prev: str | None
) -> SpanResult:
    assert _worker_engine is not None, "worker not initialised"
    return check_stored_span(_worker_engine, lo, hi, heads, first_prev)


def _bounds(engine: Engine) -> tuple[int, int]:
    """(lowest seq, number of entries); lowest is 1 for an empty log."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT min(seq), count(*) FROM audit_entries")
        low, total = cast(Any, cursor.fetchone())
        return (int(low) if low is not None else 1), int(total)
    finally:
        raw.close()


def _anchor(
    engine: Engine, start: int, heads: Mapping[int, list[str]]
) -> tuple[str, int] | VerifyResult:
    """The hash before entry `start` and how many signed heads that used: GENESIS at seq 1;
    after a retention purge, the signed checkpoint of size start - 1, which a `retention.purge`
    entry in the chain must name (audit_purge.py). Anything else is entries deleted by hand."""
    if start <= 1:
        return GENESIS, 0
    anchor = start - 1
    signed = heads.get(anchor, [])
    if not signed:
        problem = (
            f"entries 1..{anchor} are missing (deleted) and no signed checkpoint of size "
            f"{anchor} anchors the rest"
        )
        return VerifyResult(False, 0, 1, problem)
    if len(set(signed)) > 1:
        return VerifyResult(False, 0, anchor, f"signed checkpoints of size {anchor} disagree")
    if not anchor_recorded(engine, anchor):
        problem = f"entries 1..{anchor} were deleted without a recorded retention purge"
        return VerifyResult(False, 0, 1, problem)
    return signed[0], len(signed)


def verify_stored(
    engine: Engine,
    notes: list[str],
    public_key: Any,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    span: int = SPAN,
) -> VerifyResult:
    """Verify the stored log against the signed checkpoint `notes` (see the module docstring).
    `workers`: processes to use (default: `default_workers`)."""
    heads = signed_heads(notes, public_key)
    if isinstance(heads, VerifyResult):
        return heads
    start, total = _bounds(engine)
    anchored = _anchor(engine, start, heads) if total else (GENESIS, 0)
    if isinstance(anchored, VerifyResult):
        return anchored
    first_prev, anchor_heads = anchored
    last = start + total - 1
    bounds = [(lo, min(lo + span - 1, last)) for lo in range(start, last + 1, span)]
    if workers is None:
        workers = default_workers(total)
    workers = min(workers, len(bounds))

    def inner(lo: int, hi: int) -> dict[int, list[str]]:
        return {n: h for n, h in heads.items() if lo <= n <= hi}

    def prev_for(lo: int) -> str | None:
        return first_prev if lo == start else None

    if workers <= 1:
        spans = (
            check_stored_span(engine, lo, hi, inner(lo, hi), prev_for(lo)) for lo, hi in bounds
        )
        return _with_anchor(combine(spans, heads, progress), anchor_heads)
    from concurrent.futures import ProcessPoolExecutor  # only here: a CLI start-up skips it
    from multiprocessing import get_context

    url = engine.url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(url,)
    ) as pool:
        futures = [
            pool.submit(_worker_span, lo, hi, inner(lo, hi), prev_for(lo)) for lo, hi in bounds
        ]
        try:
            return _with_anchor(
                combine((f.result() for f in futures), heads, progress), anchor_heads
            )
        finally:
            pool.shutdown(cancel_futures=True)


def _with_anchor(result: VerifyResult, anchor_heads: int) -> VerifyResult:
    """Count the anchor's signed heads among the checkpoints checked."""
    if not anchor_heads:
        return result
    return dataclasses.replace(result, checkpoints=result.checkpoints + anchor_heads)
