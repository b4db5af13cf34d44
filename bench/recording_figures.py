"""What the recording benchmark reads back from a run: CDRs, stream counts, and the encrypted
recordings themselves (gaps and coverage). See `recording_load.py` for what each figure means."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callgate.recording import keys
from callgate.recording.audio import rtp_distance
from callgate.recording.bundle import decrypt
from callgate.recording.chunks import Packet
from callgate.recording.store import RecordingRepository
from callgate.storage.db import open_store, sqlite_url

FRAME_S = 0.02
OPUS_CLOCK = 48000


def utc(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def steady_cpu(samples: list[tuple[float, float]], calls: list[tuple[float, float]]) -> float:
    """Server CPU seconds per call-second while all calls were answered; nan if no window."""
    if not calls:
        return float("nan")
    start = max(answer for answer, _ in calls) + 2.0
    end = min(ended for _, ended in calls) - 1.0
    inside = [(t, cpu) for t, cpu in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 2.0:
        return float("nan")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0) / len(calls)


def placed(packets: list[Packet]) -> list[float]:
    """Where the export puts each packet: the leg's first arrival + its RTP timestamp offset."""
    if not packets:
        return []
    first = packets[0]
    return [
        first.arrival + rtp_distance(p.timestamp, first.timestamp) / OPUS_CLOCK for p in packets
    ]


def covered(starts: list[float], start: float, end: float) -> float:
    """Seconds of [start, end] covered by 20 ms frames beginning at `starts`."""
    total, reach = 0.0, start
    for at in sorted(starts):
        lo, hi = max(at, reach), min(at + FRAME_S, end)
        if hi > lo:
            total += hi - lo
            reach = hi
    return total


def missing(seqs: list[int]) -> int:
    """RTP sequence numbers missing between the lowest and highest of `seqs` (in arrival
    order), unwrapped against the previous one (RFC 3550 §A.1), so reordering is no loss."""
    if not seqs:
        return 0
    last = ext = low = high = seqs[0]
    seen = {ext}
    for seq in seqs[1:]:
        delta = (seq - last) & 0xFFFF
        ext += delta - 0x10000 if delta >= 0x8000 else delta
        last = seq
        seen.add(ext)
        low, high = min(low, ext), max(high, ext)
    return high - low + 1 - len(seen)


def gaps(packets: list[Packet]) -> int:
    """Sequence numbers missing between a leg's first and last recorded packet."""
    return missing([p.seq for p in packets])


def recording_figures(
    data_dir: Path, database: Path, talking: dict[str, tuple[float, float]] | None = None
) -> dict[str, Any]:
    """Gaps and coverage, from the recordings themselves. `talking`: per call, when both parties
    were sending (from the parties' own clocks, not the recording); without it, from the
    callee's first recorded packet to the CDR's end."""
    master = keys.load_master_key(keys.master_key_path(data_dir), env={}, create=False)
    missing = {"caller": 0, "callee": 0}
    recorded_s = connected_s = 0.0
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        ends = {
            r["call_id"]: utc(r["end_at"])
            for r in db.execute("SELECT call_id, end_at FROM calls WHERE disposition = 'answered'")
        }
    store = open_store(sqlite_url(data_dir))
    try:
        rows = RecordingRepository(store).recent(100_000)
    finally:
        store.close()
    offsets: list[float] = []  # |where the export places a packet - when it arrived|
    for row in rows:
        path = data_dir / "recordings" / row.file_name
        packets = decrypt(row, path.read_bytes(), master)
        by_leg = {leg: [p for p in packets if p.leg == leg] for leg in missing}
        for leg, mine in by_leg.items():
            missing[leg] += gaps(mine)
            offsets += [abs(at - p.arrival) for at, p in zip(placed(mine), mine, strict=True)]
        end = ends.get(row.call_id)
        if end is None or not by_leg["callee"]:
            continue
        if talking and row.call_id in talking:
            start, stopped = talking[row.call_id]
            end = min(end, stopped + FRAME_S)
        elif talking is None:
            start = by_leg["callee"][0].arrival
        else:
            raise RuntimeError(f"call {row.call_id}: recorded, but no party sent anything")
        both = min(covered(placed(mine), start, end) for mine in by_leg.values())
        recorded_s += both
        connected_s += max(0.0, end - start)
    offsets.sort()
    alignment = (
        (offsets[len(offsets) // 2], offsets[int(0.99 * len(offsets))], offsets[-1])
        if offsets
        else (float("nan"),) * 3
    )
    return {
        "gaps": missing,
        "recorded_s": recorded_s,
        "connected_s": connected_s,
        "alignment": alignment,
    }


def db_figures(database: Path) -> dict[str, Any]:
    with sqlite3.connect(database) as db:
        calls = db.execute(
            "SELECT count(*), coalesce(sum(duration_s), 0), sum(anchored = 1) FROM calls"
            " WHERE disposition = 'answered'"
        ).fetchone()
        windows = [
            (utc(a), utc(e))
            for a, e in db.execute(
                "SELECT answer_at, end_at FROM calls WHERE disposition = 'answered'"
            )
        ]
        sent_by = dict(
            db.execute(
                "SELECT reporter, coalesce(sum(packets), 0) FROM call_quality"
                " WHERE direction = 'outbound' AND final = 1 GROUP BY reporter"
            ).fetchall()
        )
        metas = [json.loads(m) for (m,) in db.execute("SELECT metadata_json FROM recordings")]
        failed = dict(
            db.execute(
                "SELECT coalesce(reason, disposition), count(*) FROM calls"
                " WHERE disposition IS NOT 'answered' GROUP BY 1"
            ).fetchall()
        )
    recorded_by = {
        leg: sum(s["packets"] for m in metas for s in m.get("streams", []) if s["label"] == leg)
        for leg in ("caller", "callee")
    }
    return {
        "answered": calls[0],
        "failed": failed,
        "answered_s": float(calls[1]),
        "anchored": int(calls[2] or 0),
        "windows": [(a, e) for a, e in windows if a is not None and e is not None],
        "sent": sum(sent_by.values()),
        "recorded": sum(recorded_by.values()),
        "recordings": len(metas),
        "by_leg": {leg: (recorded_by[leg], int(sent_by.get(leg, 0))) for leg in recorded_by},
    }
