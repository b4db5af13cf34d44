"""Retention and legal hold for compliance recordings (docs/recording.md, "Retention and legal
hold").

- **Retention.** Each recording gets `retain_until` when it starts: its end plus the period of
  the policy rule it was made under (`[recording] retention_by_rule`, by rule name) or the
  default (`[recording] retention_days`; MiFID II art. 16(7) asks for 5 years, up to 7 on a
  regulator's request; SEC 17a-4 / FINRA 4511 for 3 to 6). The date is stored in the row and
  never moved earlier: a later, shorter setting applies to new recordings only.
- **Legal hold** on a recording (compliance officers), on its call or on a party of its call
  (records/retention.py) keeps it past `retain_until`. Every change is audited (`legal_hold.set`).
- **Purge.** Deletes only recordings that are closed, past `retain_until` and not held: first the
  archived copy (`archive.delete` — the S3 server itself refuses while its Object Lock lasts),
  then the row with its wrapped key and a `recording.purged` audit entry in one transaction,
  then the file. Once the row is gone the file is unreadable (its key went with the row), even
  if the unlink fails. There is no other way to delete a recording, for any role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from callgate.recording.store import RecordingRepository, RecordingRow, recording_row
from callgate.records.audit import AuditLog
from callgate.storage.models import Call, Recording, User, utcnow

log = logging.getLogger(__name__)
recordings = cast(Table, Recording.__table__)
calls = cast(Table, Call.__table__)
users = cast(Table, User.__table__)

DEFAULT_DAYS = 2557  # 7 years: the longest MiFID II period
MAX_DAYS = 36525  # 100 years
PURGE_BATCH = 500  # recordings deleted per transaction
REASON_MAX = 255


class HoldError(ValueError):
    """A hold request that cannot be done as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long recordings are kept: `days`, or `by_rule[name]` for a rule named so."""

    days: int = DEFAULT_DAYS
    by_rule: Mapping[str, int] = field(default_factory=dict)

    def period(self, policy_rule: str | None) -> timedelta:
        """The retention of a recording made under `policy_rule` ("<id>:<name>")."""
        name = (policy_rule or "").partition(":")[2]
        return timedelta(days=self.by_rule.get(name, self.days))


@dataclass(frozen=True, slots=True)
class RecordingPurge:
    deleted: list[str]  # recording ids
    held_kept: int  # past retain_until, kept because of a legal hold
    refused: dict[str, str]  # recording id -> why its archived copy could not be deleted


# `archive.delete`-like: delete a recording's archived copy, raise to keep the recording.
ArchiveDeleter = Callable[[RecordingRow], None]


def held_clause() -> ColumnElement[bool]:
    """A recording on hold: itself, its call, or a party of its call."""
    held_users = select(users.c.handle).where(users.c.legal_hold.is_(True))
    held_calls = select(calls.c.call_id).where(
        or_(
            calls.c.legal_hold.is_(True),
            calls.c.caller_user.in_(held_users),
            calls.c.callee_user.in_(held_users),
        )
    )
    return or_(recordings.c.legal_hold.is_(True), recordings.c.call_id.in_(held_calls))


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        recordings.c.state != "open",
        recordings.c.retain_until.is_not(None),
        recordings.c.retain_until <= now,
    )


class RecordingRetention:
    def __init__(self, repository: RecordingRepository, directory: Path) -> None:
        self._engine = repository.engine
        self._repository = repository
        self._directory = directory

    def find(self, target: str) -> RecordingRow | None:
        """A recording by its id, else the latest of the call with that id."""
        row = self._repository.get(target)
        if row is None:
            rows = self._repository.for_call(target)
            row = rows[-1] if rows else None
        return row

    def hold(
        self, recording_id: str, hold: bool, reason: str | None, actor: str
    ) -> RecordingRow | None:
        """Set (with a reason: the matter or case it is for) or clear a recording's legal hold;
        None when there is no such recording. Audited as `legal_hold.set`."""
        reason = (reason or "").strip() or None
        if hold and reason is None:
            raise HoldError("a legal hold needs a reason (the matter or case it is for)")
        if reason is not None and (len(reason) > REASON_MAX or not reason.isprintable()):
            raise HoldError(f"the reason must be printable text of at most {REASON_MAX} characters")
        where = recordings.c.recording_id == recording_id
        with self._engine.begin() as conn:
            values = {"legal_hold": hold, "hold_reason": reason if hold else None}
            if not conn.execute(update(recordings).where(where).values(**values)).rowcount:
                return None
            details = {"hold": hold, **({"reason": reason} if reason else {})}
            AuditLog.append_in(conn, actor, "legal_hold.set", f"recording:{recording_id}", details)
        return self._repository.get(recording_id)

    def held_by(self, rows: Sequence[RecordingRow]) -> dict[str, list[str]]:
        """What keeps each of `rows` past its date: `recording`, `call`, `user:<handle>` (a
        party of its call); empty when nothing does."""
        out: dict[str, list[str]] = {r.recording_id: ["recording"] if r.legal_hold else []
                                     for r in rows}  # fmt: skip
        call_ids = {r.call_id for r in rows}
        if not call_ids:
            return out
        with self._engine.connect() as conn:
            found = conn.execute(
                select(calls.c.call_id, calls.c.legal_hold, calls.c.caller_user,
                       calls.c.callee_user).where(calls.c.call_id.in_(call_ids))
            ).all()  # fmt: skip
            parties = {p for _, _, caller, callee in found for p in (caller, callee)}
            held_users = set(
                conn.scalars(
                    select(users.c.handle).where(
                        users.c.handle.in_(parties), users.c.legal_hold.is_(True)
                    )
                )
            )
        by_call: dict[str, list[str]] = {}
        for call_id, call_held, caller, callee in found:
            by_call[call_id] = (["call"] if call_held else []) + [
                f"user:{p}" for p in dict.fromkeys((caller, callee)) if p in held_users
            ]
        for r in rows:
            out[r.recording_id] += by_call.get(r.call_id, [])
        return out

    def assign_missing(self, policy: RetentionPolicy) -> int:
        """Give recordings made before retention existed their `retain_until` (audited)."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    recordings.c.recording_id,
                    recordings.c.policy_rule,
                    func.coalesce(recordings.c.ended_at, recordings.c.started_at),
                ).where(recordings.c.retain_until.is_(None), recordings.c.state != "open")
            ).all()
            for recording_id, rule, end in rows:
                until = _aware(end) + policy.period(rule)
                conn.execute(
                    update(recordings)
                    .where(recordings.c.recording_id == recording_id)
                    .values(retain_until=until)
                )
            if rows:
                details = {"recordings": len(rows), "days": policy.days}
                AuditLog.append_in(conn, "system", "recording.retention", "recordings", details)
        return len(rows)

    def purge(
        self,
        actor: str,
        now: datetime | None = None,
        archive_delete: ArchiveDeleter | None = None,
    ) -> RecordingPurge:
        """Delete the closed recordings past `retain_until` that no legal hold keeps."""
        now = now or utcnow()
        with self._engine.connect() as conn:
            held_kept = int(conn.scalar(select(func.count()).where(_due(now), held_clause())) or 0)
            due = conn.execute(
                select(recordings)
                .where(_due(now), ~held_clause())
                .order_by(recordings.c.retain_until)
                .limit(PURGE_BATCH)
            ).all()
        deleted: list[str] = []
        refused: dict[str, str] = {}
        for found in due:
            row = recording_row(found)
            if row.archive is not None:
                if archive_delete is None:
                    refused[row.recording_id] = "archived, and no archive is configured"
                    continue
                if not self._still_due(row.recording_id, now):
                    continue  # held since it was listed: its archived copy stays too
                try:
                    archive_delete(row)
                except Exception as exc:  # the archive keeps it: so do we, and say why
                    refused[row.recording_id] = f"{type(exc).__name__}: {exc}"
                    continue
            if self._delete(row, actor, now):
                deleted.append(row.recording_id)
        for recording_id, why in refused.items():
            log.error("recording %s past retention kept: archive: %s", recording_id, why)
        return RecordingPurge(deleted, held_kept, refused)

    def _still_due(self, recording_id: str, now: datetime) -> bool:
        where = and_(recordings.c.recording_id == recording_id, _due(now), ~held_clause())
        with self._engine.connect() as conn:
            return conn.scalar(select(func.count()).where(where)) == 1

    def _delete(self, row: RecordingRow, actor: str, now: datetime) -> bool:
        where = and_(recordings.c.recording_id == row.recording_id, _due(now), ~held_clause())
        with self._engine.begin() as conn:
            if not conn.execute(delete(recordings).where(where)).rowcount:
                return False  # held or changed since it was listed
            details: dict[str, Any] = {
                "call_id": row.call_id,
                "file_sha256": row.sha256,
                "retain_until": _aware(row.retain_until).isoformat() if row.retain_until else None,
                **({"archive": row.archive} if row.archive else {}),
            }
            AuditLog.append_in(conn, actor, "recording.purged", f"recording:{row.recording_id}",
                               details)  # fmt: skip
        path = self._directory / row.file_name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # its key is gone with the row: the file is unreadable anyway
            log.error("recording %s purged but its file stays: %s", row.recording_id, exc)
        return True


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class RecordingPurgeJob:
    """`callgate serve` purges expired recordings every `interval` seconds (an error is logged
    and the next run tries again)."""

    def __init__(
        self,
        retention: RecordingRetention,
        interval: float = 3600.0,
        archive_delete: ArchiveDeleter | None = None,
    ) -> None:
        self._retention = retention
        self._interval = interval
        self._archive_delete = archive_delete
        self._task: asyncio.Task[None] | None = None

    @property
    def retention(self) -> RecordingRetention:
        return self._retention

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recording-purge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self, actor: str = "system") -> RecordingPurge:
        result = await asyncio.to_thread(self._retention.purge, actor, None, self._archive_delete)
        if result.deleted or result.refused:
            log.info(
                "recording purge: %d deleted, %d held kept, %d kept by the archive",
                len(result.deleted),
                result.held_kept,
                len(result.refused),
            )
        return result

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as exc:
                log.error("recording purge failed: %s", exc)
            await asyncio.sleep(self._interval)
