"""CallRecorder's quality reports: coalesced per party, written at the call's end, many calls'
reports in one transaction, a final report never replaced by a held non-final one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callgate.clock import ManualClock
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_types import new_call_id
from callgate.records.quality import StreamStats
from callgate.records.quality_store import QualityRepository
from callgate.storage.db import Store

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def report(packets: int, lost: int = 0) -> list[StreamStats]:
    return [
        StreamStats("audio", "inbound", packets, lost, jitter_ms=5.0),
        StreamStats("audio", "outbound", packets, 0),
    ]


def packets(quality: QualityRepository, call_id: str) -> dict[tuple[str, str], tuple[int, bool]]:
    return {(r.reporter, r.direction): (r.packets, r.final) for r in quality.for_call(call_id)}


def test_reports_are_held_between_writes_and_the_latest_is_written_at_the_end(
    store: Store,
) -> None:
    cdrs = CdrRepository(store, ManualClock(start_wall=T0.timestamp()))
    quality = QualityRepository(store.sessions)
    recorder = CallRecorder(cdrs, quality)
    recorder.quality_every = 3600.0  # nothing is due again during the test
    calls = [new_call_id() for _ in range(3)]
    try:
        for call_id in calls:
            recorder.open(CallOpen(call_id, "alice", "bob", T0, caller_device="d1"),
                          ringing_devices=1, relay_only=True)  # fmt: skip
            # the first report of each party is written at once
            recorder.stats(call_id, "caller", report(100), False, T0)
            recorder.stats(call_id, "callee", report(90), False, T0)
        recorder.settled().result(timeout=30)
        assert packets(quality, calls[0]) == {
            ("caller", "inbound"): (100, False),
            ("caller", "outbound"): (100, False),
            ("callee", "inbound"): (90, False),
            ("callee", "outbound"): (90, False),
        }
        first = recorder.done()
        for n in range(1, 6):  # later reports are held: no write queued for them
            for call_id in calls:
                at = T0 + timedelta(seconds=2 * n)
                recorder.stats(call_id, "caller", report(100 + n), False, at)
                recorder.stats(call_id, "callee", report(90 + n, lost=n), False, at)
        assert recorder.queued() == first
        assert packets(quality, calls[0])[("caller", "inbound")] == (100, False)

        # the call's end writes the latest held reports before the CDR's final state
        end = T0 + timedelta(seconds=11)
        recorder.ended(CallEnd(calls[0], end, "answered", "hangup", "caller", "alice", 11.0))
        recorder.settled().result(timeout=30)
        rows = {(r.reporter, r.direction): r for r in quality.for_call(calls[0])}
        assert (rows["caller", "inbound"].packets, rows["callee", "inbound"].packets) == (105, 95)
        assert rows["callee", "inbound"].packets_lost == 5
        assert rows["caller", "inbound"].reported_at.astimezone(UTC) == T0 + timedelta(seconds=10)
        cdr = cdrs.get(calls[0])
        assert cdr is not None and cdr.disposition == "answered"

        # a final report is written as it comes, and a held non-final one never replaces it
        recorder.stats(calls[1], "caller", report(200), True, end)
        recorder.stats(calls[1], "caller", report(150), False, end)  # late, non-final
        recorder.close()  # writes what is still held (the other calls' latest reports)
        assert packets(quality, calls[1])[("caller", "inbound")] == (200, True)
        assert packets(quality, calls[2])[("callee", "outbound")] == (95, False)
    finally:
        recorder.close()
