"""What the monitor inside `serve` found, in the database (`detect_findings`; docs/detection.md,
"Inside serve"): one row per internal host, application, peer address and sanctioned-or-not.

`record()` takes the monitor's changes (detect/live/monitor.py `Change`: a session and the
counters it gained since last time) and adds them up, so volumes keep growing across restarts. A
finding is *fresh* when its row is new, or when it comes back after more than `REAPPEAR_S` of
silence (another call): fresh unsanctioned findings are written to the audit log in the same
transaction, and returned for the alerts (syslog, webhook).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from callgate.detect.live.monitor import Change
from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from callgate.storage.models import DetectionFinding, from_unix

REAPPEAR_S = 180.0  # silence after which the same finding counts as a new occurrence
MAX_TARGETS = 64  # transport/port entries kept per finding (a block list, not a log)
MAX_BLOCKED = 10_000  # findings in one nftables ruleset, the most recently seen
AUDIT_ACTOR = "monitor"
AUDIT_ACTION = "detect.finding"


@dataclass(frozen=True, slots=True)
class FindingRow:
    id: int
    host: str
    app: str
    peer: str
    sanctioned: bool
    interface: str
    first_seen: datetime
    last_seen: datetime
    packets_out: int
    packets_in: int
    bytes_out: int
    bytes_in: int
    confidence: float
    path: str
    protocols: list[str]
    evidence: list[str]
    targets: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "host": self.host, "app": self.app, "peer": self.peer,
            "sanctioned": self.sanctioned, "interface": self.interface,
            "first_seen": self.first_seen.isoformat(), "last_seen": self.last_seen.isoformat(),
            "packets_out": self.packets_out, "packets_in": self.packets_in,
            "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
            "confidence": self.confidence, "path": self.path,
            "protocols": self.protocols, "evidence": self.evidence, "targets": self.targets,
        }  # fmt: skip


class FindingRepository:
    def __init__(self, store: Store) -> None:
        self._engine = store.engine

    def record(self, interface: str, changes: Sequence[Change]) -> list[FindingRow]:
        """Add the changes up; the fresh findings (new, or back after a silence) come back.
        One transaction; retried once when another node inserted the same finding meanwhile."""
        try:
            return self._record(interface, changes)
        except IntegrityError:
            return self._record(interface, changes)

    def _record(self, interface: str, changes: Sequence[Change]) -> list[FindingRow]:
        fresh: list[int] = []
        with self._engine.begin() as conn:
            for change in changes:
                if self._apply(conn, interface, change):
                    fresh.append(self._id(conn, change))
            rows = self._rows(conn, fresh)
            AuditLog.append_many_in(conn, [
                (AUDIT_ACTOR, AUDIT_ACTION, f"host:{row.host}", _audit_details(row))
                for row in rows if not row.sanctioned
            ])  # fmt: skip
        return rows

    @staticmethod
    def _key(change: Change) -> Any:
        s = change.session
        t = DetectionFinding
        return (
            (t.host == s.host)
            & (t.app == s.app[:128])
            & (t.peer == s.peer)
            & (t.sanctioned == s.sanctioned)
        )

    def _id(self, conn: Connection, change: Change) -> int:
        return int(conn.execute(select(DetectionFinding.id).where(self._key(change))).scalar_one())

    def _apply(self, conn: Connection, interface: str, change: Change) -> bool:
        """Insert or add to the finding's row; True when the finding is fresh."""
        s, t = change.session, DetectionFinding
        first, last = from_unix(s.first_seen), from_unix(s.last_seen)
        described = {
            "interface": interface[:16], "confidence": s.confidence, "path": s.path,
            "protocols": json.dumps(s.protocols), "evidence": json.dumps(s.evidence[:20]),
        }  # fmt: skip
        row = conn.execute(
            select(t.id, t.first_seen, t.last_seen, t.targets).where(self._key(change))
        ).first()
        if row is None:
            conn.execute(insert(t).values(
                host=s.host, app=s.app[:128], peer=s.peer, sanctioned=s.sanctioned,
                first_seen=first, last_seen=last, packets_out=change.packets_out,
                packets_in=change.packets_in, bytes_out=change.bytes_out,
                bytes_in=change.bytes_in, targets=_targets([], change.targets), **described,
            ))  # fmt: skip
            return True
        targets = _targets(json.loads(row.targets), change.targets)
        conn.execute(update(t).where(t.id == row.id).values(targets=targets,
            first_seen=min(first, row.first_seen), last_seen=max(last, row.last_seen),
            packets_out=t.packets_out + change.packets_out,
            packets_in=t.packets_in + change.packets_in,
            bytes_out=t.bytes_out + change.bytes_out, bytes_in=t.bytes_in + change.bytes_in,
            **described,
        ))  # fmt: skip
        return bool(first > row.last_seen + timedelta(seconds=REAPPEAR_S))

    @staticmethod
    def _rows(conn: Connection, ids: list[int]) -> list[FindingRow]:
        if not ids:
            return []
        rows = conn.execute(select(*_COLUMNS).where(DetectionFinding.id.in_(ids))).all()
        by_id = {row.id: _row(row) for row in rows}
        return [by_id[i] for i in ids]

    def purge(self, before: datetime) -> int:
        """Delete the findings last seen before `before`, audited (`detect.purge`) with their
        number in the same transaction; returns it."""
        t = DetectionFinding
        with self._engine.begin() as conn:
            gone = conn.execute(delete(t).where(t.last_seen < before)).rowcount or 0
            if gone:
                details = {"deleted": gone, "last_seen_before": before.isoformat()}
                AuditLog.append_in(conn, AUDIT_ACTOR, "detect.purge", "findings", details)
        return int(gone)

    def block_targets(self, limit: int = MAX_BLOCKED) -> list[tuple[str, list[str]]]:
        """(peer, targets) of the unsanctioned findings seen most recently (a block list)."""
        t = DetectionFinding
        query = (
            select(t.peer, t.targets)
            .where(t.sanctioned.is_(False))
            .order_by(t.last_seen.desc(), t.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [(row.peer, json.loads(row.targets)) for row in conn.execute(query)]

    def version(self) -> str:
        """A short text that changes whenever a finding is added, grows or is deleted — by this
        server or another node on the same database (the console's long polls compare it)."""
        t = DetectionFinding
        query = select(func.count(), func.max(t.id), func.max(t.last_seen),
                       func.sum(t.packets_out + t.packets_in))  # fmt: skip
        with self._engine.connect() as conn:
            count, top, last, packets = conn.execute(query).one()
        stamp = last.timestamp() if last is not None else 0.0
        return f"{count}.{top or 0}.{stamp:.6f}.{packets or 0}"

    def recent(self, limit: int = 100, unsanctioned_only: bool = False) -> list[FindingRow]:
        """The findings seen most recently first."""
        query = select(*_COLUMNS).order_by(
            DetectionFinding.last_seen.desc(), DetectionFinding.id.desc()
        )
        if unsanctioned_only:
            query = query.where(DetectionFinding.sanctioned.is_(False))
        with self._engine.connect() as conn:
            return [_row(r) for r in conn.execute(query.limit(limit)).all()]


_COLUMNS = tuple(DetectionFinding.__table__.columns)


def _row(row: Row[Any]) -> FindingRow:
    values = dict(row._mapping)
    values["protocols"] = json.loads(values["protocols"])
    values["evidence"] = json.loads(values["evidence"])
    values["targets"] = json.loads(values["targets"])
    return FindingRow(**values)


def _targets(stored: list[str], new: Sequence[str]) -> str:
    """The union of a finding's targets, as stored (sorted, at most MAX_TARGETS)."""
    return json.dumps(sorted(set(stored) | set(new))[:MAX_TARGETS])


def _audit_details(row: FindingRow) -> dict[str, Any]:
    return {
        "app": row.app, "peer": row.peer, "interface": row.interface,
        "first_seen": row.first_seen.isoformat(), "path": row.path,
        "confidence": row.confidence, "protocols": row.protocols,
    }  # fmt: skip
