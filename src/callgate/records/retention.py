"""Retention and legal hold: how long each record class is kept, and the purge job.

Classes and what the purge deletes once they are older than their retention (days; unset =
kept forever):

    cdr      `calls` rows that ended before the cutoff
    quality  `call_quality` rows reported before the cutoff
    audit    the oldest audit entries, as a prefix ending at a signed checkpoint older than the
             cutoff, only after the whole chain verified, never past the first entry about held
             records; `audit verify` then starts from that checkpoint (records/audit_purge.py).
             Needs the audit signing key (its public half): without it nothing is deleted.

Legal hold (on a user or on one call) wins over retention: the calls of a held user or a held
call and their quality rows are never deleted. A call with a recording is kept as long as the
recording (recording/retention.py purges recordings, on their own retention).

Every purge appends one `retention.purge` entry with what went (counts, time and seq ranges),
in the same transaction as the deletes; every hold change appends `legal_hold.set`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from callgate.records.audit import AuditLog, load_public_key
from callgate.records.audit_chain import VerifyResult
from callgate.records.audit_purge import plan_and_delete
from callgate.records.audit_verify import verify_stored
from callgate.storage.models import (
    AuditCheckpoint,
    Call,
    CallQuality,
    Recording,
    RetentionSetting,
    User,
    utcnow,
)

log = logging.getLogger(__name__)
CLASSES = ("cdr", "quality", "audit")
calls = cast(Table, Call.__table__)
quality = cast(Table, CallQuality.__table__)
users = cast(Table, User.__table__)
settings_table = cast(Table, RetentionSetting.__table__)
recordings = cast(Table, Recording.__table__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    cdr: int
    quality: int
    audit: int
    held_calls_kept: int  # calls past retention kept because of a legal hold
    details: dict[str, Any]


def _held_users() -> Any:
    return select(users.c.handle).where(users.c.legal_hold.is_(True))


def _call_held() -> ColumnElement[bool]:
    held = _held_users()
    return or_(
        calls.c.legal_hold.is_(True), calls.c.caller_user.in_(held), calls.c.callee_user.in_(held)
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


class Retention:
    def __init__(self, engine: Engine, audit_key: Path | None = None) -> None:
        self._engine = engine
        self._audit_key = audit_key  # the checkpoint signing key file (audit purge verifies first)

    # ---- settings ----

    def settings(self) -> dict[str, int | None]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(settings_table)).all()
        found = {row.record_class: row.days for row in rows}
        return {name: found.get(name) for name in CLASSES}

    def set_settings(self, days: dict[str, int | None], actor: str) -> dict[str, int | None]:
        unknown = set(days) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown record classes: {', '.join(sorted(unknown))}")
        with self._engine.begin() as conn:
            before = {row.record_class: row.days for row in conn.execute(select(settings_table))}
            conn.execute(delete(settings_table).where(settings_table.c.record_class.in_(days)))
            now = utcnow()
            rows = [{"record_class": k, "days": v, "updated_at": now} for k, v in days.items()]
            if rows:
                conn.execute(insert(settings_table), rows)
            after = {name: days.get(name, before.get(name)) for name in CLASSES}
            AuditLog.append_in(
                conn,
                actor,
                "retention.settings",
                "retention",
                {"before": {n: before.get(n) for n in CLASSES}, "after": after},
            )
        return after

    # ---- legal hold ----

    def hold_call(self, call_id: str, hold: bool, actor: str) -> bool:
        """Set or clear a call's legal hold; False when there is no such call."""
        with self._engine.begin() as conn:
            query = update(calls).where(calls.c.call_id == call_id).values(legal_hold=hold)
            if not conn.execute(query).rowcount:
                return False
            AuditLog.append_in(conn, actor, "legal_hold.set", f"call:{call_id}", {"hold": hold})
        return True

    def hold_user(self, handle: str, hold: bool, actor: str) -> bool:
        """Set or clear a user's legal hold; False when there is no such user."""
        with self._engine.begin() as conn:
            query = update(users).where(users.c.handle == handle).values(legal_hold=hold)
            if not conn.execute(query).rowcount:
                return False
            AuditLog.append_in(conn, actor, "legal_hold.set", f"user:{handle}", {"hold": hold})
        return True

    # ---- purge ----

    def purge(self, actor: str, now: datetime | None = None) -> PurgeResult:
        """Delete what is past retention and not held; audit it in the same transaction."""
        now = now or utcnow()
        days = self.settings()
        public_key, verified = self._verify_audit() if days["audit"] is not None else (None, None)
        with self._engine.begin() as conn:
            details: dict[str, Any] = {"settings": days}
            cdr, kept = self._purge_cdrs(conn, days["cdr"], now, details)
            quality_count = self._purge_quality(conn, days["quality"], now, details)
            audit_count, details["audit"] = plan_and_delete(
                conn, days["audit"], now, verified, public_key
            )
            details["held_calls_kept"] = kept
            AuditLog.append_in(conn, actor, "retention.purge", "retention", details)
        return PurgeResult(cdr, quality_count, audit_count, kept, details)

    def _verify_audit(self) -> tuple[Ed25519PublicKey | None, VerifyResult | None]:
        """The whole chain's verdict, taken before an audit purge (None without a key)."""
        if self._audit_key is None or not self._audit_key.exists():
            return None, None
        public_key = load_public_key(self._audit_key)
        with self._engine.connect() as conn:
            notes = [str(n) for n in conn.scalars(select(AuditCheckpoint.signed_note))]
        return public_key, verify_stored(self._engine, notes, public_key, workers=1)

    @staticmethod
    def _purge_cdrs(
        conn: Connection, days: int | None, now: datetime, details: dict[str, Any]
    ) -> tuple[int, int]:
        if days is None:
            return 0, 0
        cutoff = now - timedelta(days=days)
        # a call with a recording still kept is kept too: it is the recording's context, and
        # the holds on its parties reach the recording through it
        recorded = calls.c.call_id.in_(select(recordings.c.call_id))
        with_recording = int(
            conn.scalar(select(func.count()).where(calls.c.end_at < cutoff, recorded)) or 0
        )
        old = and_(calls.c.end_at < cutoff, ~recorded)
        kept = int(conn.scalar(select(func.count()).where(old, _call_held())) or 0)
        gone = select(func.count(), func.min(calls.c.invite_at), func.max(calls.c.invite_at)).where(
            old, ~_call_held()
        )
        count, first, last = conn.execute(gone).one()
        if count:
            conn.execute(delete(calls).where(old, ~_call_held()))
        details["cdr"] = {
            "cutoff": cutoff.isoformat(),
            "deleted": int(count),
            "invite_from": _iso(first),
            "invite_to": _iso(last),
            "kept_with_recordings": with_recording,
        }
        return int(count), kept

    @staticmethod
    def _purge_quality(
        conn: Connection, days: int | None, now: datetime, details: dict[str, Any]
    ) -> int:
        if days is None:
            return 0
        cutoff = now - timedelta(days=days)
        held_calls = select(calls.c.call_id).where(_call_held())
        where = (quality.c.reported_at < cutoff, quality.c.call_id.not_in(held_calls))
        count, first, last = conn.execute(
            select(
                func.count(), func.min(quality.c.reported_at), func.max(quality.c.reported_at)
            ).where(*where)
        ).one()
        if count:
            conn.execute(delete(quality).where(*where))
        details["quality"] = {
            "cutoff": cutoff.isoformat(),
            "deleted": int(count),
            "reported_from": _iso(first),
            "reported_to": _iso(last),
        }
        return int(count)


class PurgeJob:
    """`callgate serve` runs the purge every `interval` seconds while any retention period is
    set (a failed run is logged and retried at the next interval)."""

    def __init__(
        self, engine: Engine, interval: float = 3600.0, audit_key: Path | None = None
    ) -> None:
        self._retention = Retention(engine, audit_key)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-purge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> PurgeResult | None:
        """Purge now when a period is set; None when everything is kept forever."""
        days = await asyncio.to_thread(self._retention.settings)
        if all(value is None for value in days.values()):
            return None
        result = await asyncio.to_thread(self._retention.purge, "system")
        log.info(
            "retention purge: %d CDRs, %d quality rows, %d audit entries",
            result.cdr,
            result.quality,
            result.audit,
        )
        return result

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except SQLAlchemyError as exc:
                log.error("retention purge failed: %s", exc)
