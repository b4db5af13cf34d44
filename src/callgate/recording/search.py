"""Finding recordings: the filters a compliance officer searches by, and keyset pages.

    party     a party of the recording's call: caller or callee, a handle or a number as the CDR
              holds it (SIP calls keep the number: `+442071234567`)
    since     started at or after (inclusive); until: started before (exclusive)
    call_id   the recording(s) of one call
    held      true: something keeps it past its date (a legal hold on it, its call or a party);
              false: nothing does
    archive   `archived`: its WORM copy exists; `pending`: closed, not yet copied; `hold-pending`:
              held, but the S3 legal hold is not yet confirmed on the copy
    state     open, closed, failed, interrupted

Newest first, by (started_at, recording_id) descending: a unique order, so a page continues
after the last row of the one before (keyset, no OFFSET: records/query.py's `newest_first_page`,
which CDR listings page with too) and recordings made meanwhile never shift a page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Engine, Select, Table, or_, select

from callgate.recording.retention import held_clause
from callgate.recording.store import RecordingRow, recording_row
from callgate.records.query import newest_first_page
from callgate.storage.models import Call, Recording

recordings = cast(Table, Recording.__table__)
calls = cast(Table, Call.__table__)

ArchiveState = Literal["archived", "pending", "hold-pending"]
State = Literal["open", "closed", "failed", "interrupted"]


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    party: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    call_id: str | None = None
    held: bool | None = None
    archive: str | None = None
    state: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.party is not None:
            of_party = select(calls.c.call_id).where(
                or_(calls.c.caller_user == self.party, calls.c.callee_user == self.party)
            )
            query = query.where(recordings.c.call_id.in_(of_party))
        if self.since is not None:
            query = query.where(recordings.c.started_at >= self.since)
        if self.until is not None:
            query = query.where(recordings.c.started_at < self.until)
        if self.call_id is not None:
            query = query.where(recordings.c.call_id == self.call_id)
        if self.held is not None:
            query = query.where(held_clause() if self.held else ~held_clause())
        if self.state is not None:
            query = query.where(recordings.c.state == self.state)
        return self._archive(query)

    def _archive(self, query: Select[Any]) -> Select[Any]:
        copied = recordings.c.archive_bucket.is_not(None)
        if self.archive == "archived":
            return query.where(copied)
        if self.archive == "pending":
            return query.where(~copied, recordings.c.state != "open")
        if self.archive == "hold-pending":
            return query.where(copied, recordings.c.archive_hold.is_(False), held_clause())
        return query


@dataclass(frozen=True, slots=True)
class RecordingPage:
    rows: Sequence[RecordingRow]
    next_cursor: str | None


def search(engine: Engine, where: RecordingFilter, limit: int, cursor: str | None) -> RecordingPage:
    """One page of at most `limit` recordings (1..MAX_LIMIT); BadCursor for a cursor this
    listing did not hand out."""
    order = (recordings.c.started_at, recordings.c.recording_id)
    page = newest_first_page(engine, where.apply(select(recordings)), "recording", order,
                             _recording_id, limit, cursor)  # fmt: skip
    return RecordingPage([recording_row(r) for r in page.rows], page.next_cursor)


def _recording_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32
