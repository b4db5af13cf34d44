"""QualityRepository: one `call_quality` row per (call, reporter, direction, kind), upserted;
`upsert_many` stores many calls' reports in one transaction (records/call_recorder.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callgate.records.quality import StreamStats, assess
from callgate.storage.models import CallQuality, utcnow

REPORTERS = ("caller", "callee")


@dataclass(frozen=True, slots=True)
class QualityReport:
    """One party's `call.stats` report of a call, as it is to be stored."""

    call_id: str
    reporter: str
    streams: tuple[StreamStats, ...]
    final: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class QualityRecord:
    call_id: str
    reporter: str
    kind: str
    direction: str
    packets: int
    packets_lost: int
    loss_rate: float
    jitter_ms: float | None
    rtt_ms: float | None
    concealed_ratio: float | None
    mos: float
    classification: str
    poor_reasons: tuple[str, ...]
    reported_at: datetime
    final: bool


def _record(row: CallQuality) -> QualityRecord:
    return QualityRecord(
        call_id=row.call_id,
        reporter=row.reporter,
        kind=row.kind,
        direction=row.direction,
        packets=row.packets,
        packets_lost=row.packets_lost,
        loss_rate=row.loss_rate,
        jitter_ms=row.jitter_ms,
        rtt_ms=row.rtt_ms,
        concealed_ratio=row.concealed_ratio,
        mos=row.mos,
        classification=row.classification,
        poor_reasons=tuple(json.loads(row.poor_reasons)),
        reported_at=row.reported_at,
        final=row.final,
    )


class QualityRepository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def upsert(
        self,
        call_id: str,
        reporter: str,
        streams: list[StreamStats] | StreamStats,
        final: bool = False,
        at: datetime | None = None,
    ) -> list[QualityRecord]:
        """Store the latest figures of each stream (a final report is never overwritten by a
        later non-final one); return the rows as stored."""
        items = [streams] if isinstance(streams, StreamStats) else streams
        report = QualityReport(call_id, reporter, tuple(items), final, at or utcnow())
        with self._sessions.begin() as session:
            return self._upsert_in(session, report)

    def upsert_many(self, reports: Sequence[QualityReport]) -> None:
        """Several reports (of many calls) in one transaction, each as `upsert` stores it."""
        for report in reports:
            _check(report.reporter)
        with self._sessions.begin() as session:
            for report in reports:
                self._upsert_in(session, report)

    def _upsert_in(self, session: Session, report: QualityReport) -> list[QualityRecord]:
        _check(report.reporter)
        query = select(CallQuality).where(
            CallQuality.call_id == report.call_id, CallQuality.reporter == report.reporter
        )
        rows = {(row.direction, row.kind): row for row in session.scalars(query)}
        out = []
        for stats in report.streams:
            row = rows.get((stats.direction, stats.kind))
            if row is None:
                row = CallQuality(
                    call_id=report.call_id,
                    reporter=report.reporter,
                    direction=stats.direction,
                    kind=stats.kind,
                )
                session.add(row)
                rows[(stats.direction, stats.kind)] = row
            elif row.final and not report.final:
                out.append(_record(row))
                continue
            _fill(row, stats, report.final, report.at)
            session.flush()
            out.append(_record(row))
        return out

    def for_call(self, call_id: str) -> list[QualityRecord]:
        with self._sessions() as session:
            query = (
                select(CallQuality)
                .where(CallQuality.call_id == call_id)
                .order_by(CallQuality.reporter, CallQuality.direction, CallQuality.kind)
            )
            return [_record(row) for row in session.scalars(query)]


def _check(reporter: str) -> None:
    if reporter not in REPORTERS:
        raise ValueError(f"reporter must be caller or callee, not {reporter!r}")


def _fill(row: CallQuality, stats: StreamStats, final: bool, at: datetime) -> None:
    verdict = assess(stats)
    row.packets = stats.packets
    row.packets_lost = stats.packets_lost
    row.loss_rate = round(stats.loss_rate, 6)
    row.jitter_ms = stats.jitter_ms
    row.rtt_ms = stats.rtt_ms
    row.concealed_ratio = stats.concealed_ratio
    row.mos = verdict.mos
    row.classification = verdict.classification
    row.poor_reasons = json.dumps(list(verdict.poor_reasons))
    row.reported_at = at
    row.final = final
