"""The `recordings` table, and the audit entries that go with each change of a recording.

`recording.started` is appended in the transaction that creates the row (`recording.codec` in
the one that changes its codec, once a transcoded call's callee answered); `recording.closed`
(or `.failed`, `.interrupted`) in the one that finishes it, with the SHA-256 of the stored
ciphertext and metadata (`digest`): from then on the audit chain vouches for the recording.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from callgate.recording.writer import RecordingFailure
from callgate.records.audit import AuditLog
from callgate.records.audit_chain import canonical_json
from callgate.storage.db import Store
from callgate.storage.models import Call, Recording

ACTOR = "system"


def recording_digest(file_sha256: str, metadata: Mapping[str, Any]) -> str:
    """SHA-256 over the ciphertext file's SHA-256 and the canonical metadata."""
    return hashlib.sha256(bytes.fromhex(file_sha256) + canonical_json(dict(metadata))).hexdigest()


@dataclass(frozen=True, slots=True)
class RecordingRow:
    recording_id: str
    call_id: str
    state: str
    started_at: datetime
    ended_at: datetime | None
    file_name: str
    key_id: str
    wrapped_key: str
    codec: str
    policy_rule: str | None
    chunks: int
    bytes: int
    sha256: str | None
    failure: str | None
    metadata: dict[str, Any]
    audit_seq: int | None
    retain_until: datetime | None = None
    legal_hold: bool = False
    hold_reason: str | None = None
    archive: dict[str, Any] | None = None  # bucket, key, versions {name: version id}, at,
    # legal_hold (the S3 legal hold confirmed on them)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            if name != "wrapped_key":
                out[name] = value
        return out


def _archive(r: Any) -> dict[str, Any] | None:
    if r.archive_bucket is None:
        return None
    at = r.archived_at.isoformat().replace("+00:00", "Z") if r.archived_at else None
    versions = json.loads(r.archive_versions or "{}")
    return {"bucket": r.archive_bucket, "key": r.archive_key, "versions": versions, "at": at,
            "legal_hold": bool(r.archive_hold)}  # fmt: skip


def recording_row(r: Any) -> RecordingRow:
    return RecordingRow(
        r.recording_id, r.call_id, r.state, r.started_at, r.ended_at, r.file_name, r.key_id,
        r.wrapped_key, r.codec, r.policy_rule, r.chunks, r.bytes, r.sha256, r.failure,
        json.loads(r.metadata_json), r.audit_seq, r.retain_until, bool(r.legal_hold),
        r.hold_reason, _archive(r),
    )  # fmt: skip


class RecordingRepository:
    def __init__(self, store: Store) -> None:
        self._engine = store.engine

    @property
    def engine(self) -> Engine:
        return self._engine

    def create(self, row: Mapping[str, Any], at: datetime) -> None:
        """Insert the row (state `open`) and audit `recording.started`. A `retention` timedelta
        in `row` sets `retain_until` (moved to the recording's end when it closes)."""
        values = {**row, "state": "open", "started_at": at, "chunks": 0, "bytes": 0}
        retention = values.pop("retention", None)
        details = {"call_id": row["call_id"], "key_id": row["key_id"], "codec": row["codec"]}
        if isinstance(retention, timedelta):
            values["retain_until"] = at + retention
            details["retention_days"] = retention.days
        with self._engine.begin() as conn:
            conn.execute(insert(Recording).values(**values))
            AuditLog.append_in(
                conn, ACTOR, "recording.started", f"recording:{row['recording_id']}", details, at
            )

    def set_codec(self, recording_id: str, codec: str, at: datetime) -> None:
        """The codec of an open recording once the callee's is known (a transcoded call), and
        `recording.codec` in the audit log in the same transaction, so the chain says what the
        recording holds (its `recording.started` named the caller's codec alone).
        RecordingFailure when no open recording has that id."""
        with self._engine.begin() as conn:
            found = conn.execute(
                select(Recording.call_id, Recording.codec).where(
                    Recording.recording_id == recording_id, Recording.state == "open"
                )
            ).first()
            changed = conn.execute(
                update(Recording)
                .where(Recording.recording_id == recording_id, Recording.state == "open")
                .values(codec=codec)
            )
            if found is None or changed.rowcount != 1:
                raise RecordingFailure(f"no open recording {recording_id}")  # rolled back
            details = {"call_id": found.call_id, "codec": codec, "previous": found.codec}
            AuditLog.append_in(
                conn, ACTOR, "recording.codec", f"recording:{recording_id}", details, at
            )

    def set_participants(
        self, recording_id: str, participants: list[dict[str, Any]], role: str, at: datetime
    ) -> None:
        """The participants of an open recording once one is known (a ring group's member who
        answered), in its metadata (so a recording a crash left open names them too), and
        `recording.participant` in the audit log in the same transaction. RecordingFailure
        when no open recording has that id."""
        with self._engine.begin() as conn:
            found = conn.execute(
                select(Recording.call_id, Recording.metadata_json).where(
                    Recording.recording_id == recording_id, Recording.state == "open"
                )
            ).first()
            if found is None:
                raise RecordingFailure(f"no open recording {recording_id}")
            metadata = {**json.loads(found.metadata_json), "participants": participants}
            changed = conn.execute(
                update(Recording)
                .where(Recording.recording_id == recording_id, Recording.state == "open")
                .values(metadata_json=json.dumps(metadata))
            )
            if changed.rowcount != 1:
                raise RecordingFailure(f"no open recording {recording_id}")  # rolled back
            party = next(p for p in participants if p.get("id") == role)
            details = {"call_id": found.call_id, "role": role, "handle": party.get("handle")}
            AuditLog.append_in(
                conn, ACTOR, "recording.participant", f"recording:{recording_id}", details, at
            )

    def finish(
        self,
        recording_id: str,
        state: str,
        at: datetime,
        *,
        chunks: int,
        size: int,
        file_sha256: str,
        metadata: Mapping[str, Any],
        failure: str | None = None,
    ) -> int:
        """Close the row and append `recording.<state>` with its digest; returns the audit seq."""
        digest = recording_digest(file_sha256, metadata)
        with self._engine.begin() as conn:
            call_id, started, retain_until = conn.execute(
                select(Recording.call_id, Recording.started_at, Recording.retain_until).where(
                    Recording.recording_id == recording_id
                )
            ).one()
            if retain_until is not None:  # the retention period runs from the recording's end
                retain_until = at + (retain_until - started)
            entry = AuditLog.append_in(
                conn,
                ACTOR,
                f"recording.{state}",
                f"recording:{recording_id}",
                {
                    "call_id": call_id,
                    "chunks": chunks,
                    "bytes": size,
                    "file_sha256": file_sha256,
                    "digest": digest,
                    **({"failure": failure} if failure else {}),
                    **({"retain_until": retain_until.isoformat()} if retain_until else {}),
                },
                at,
            )
            conn.execute(
                update(Recording)
                .where(Recording.recording_id == recording_id)
                .values(
                    state=state,
                    ended_at=at,
                    chunks=chunks,
                    bytes=size,
                    sha256=file_sha256,
                    failure=failure,
                    metadata_json=json.dumps(dict(metadata), sort_keys=True),
                    audit_seq=entry.seq,
                    retain_until=retain_until,
                )
            )
            conn.execute(
                update(Call)
                .where(Call.call_id == call_id)
                .values(recording_ids=json.dumps([recording_id]))
            )
        return entry.seq

    def get(self, recording_id: str) -> RecordingRow | None:
        with self._engine.connect() as conn:
            found = conn.execute(
                select(Recording).where(Recording.recording_id == recording_id)
            ).first()
        return recording_row(found) if found is not None else None

    def for_call(self, call_id: str) -> list[RecordingRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(Recording).where(Recording.call_id == call_id).order_by(Recording.started_at)
            ).all()
        return [recording_row(r) for r in rows]

    def recent(self, limit: int = 100) -> list[RecordingRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(Recording).order_by(Recording.started_at.desc()).limit(limit)
            ).all()
        return [recording_row(r) for r in rows]

    def open_ones(self) -> list[RecordingRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(Recording).where(Recording.state == "open")).all()
        return [recording_row(r) for r in rows]
