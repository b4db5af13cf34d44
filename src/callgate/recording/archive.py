"""The WORM archive: a copy of each closed recording in an S3 bucket with Object Lock
(docs/recording.md, "WORM archive").

Each recording becomes two objects, `PREFIX<recording id>/recording.cgrec` (the encrypted file as
stored) and `…/metadata.json` (the row: participants, streams, digest, audit seq, the master
key's id and the recording key wrapped by it), each written in **compliance mode** with
`retain-until` = the recording's `retain_until` (its retention class): until then the S3 server
refuses to delete or overwrite that version, for any credentials (Amazon S3 "Object Lock",
compliance mode; SEC 17a-4(f) non-rewriteable, non-erasable storage).

Before a copy counts, the server must confirm it: each upload carries its SHA-256
(`x-amz-checksum-sha256`, checked by the server), and a HEAD of each version must answer mode
COMPLIANCE and a retain-until no earlier than ours. Then the row records bucket, key and version
ids and `recording.archived` goes into the audit chain in the same transaction. A bucket without
Object Lock is refused before anything is written. The purge (recording/retention.py) deletes
the archived versions first and keeps the recording when the server refuses.

**Legal hold.** Whatever holds a recording (itself, its call, a party: recording/retention.py)
is mirrored as an S3 legal hold on its archived versions, which keeps them past retain-until
until it is lifted: set at upload when the recording is already held, and by every run after
that (`sync_holds`) while the row's confirmed `archive_hold` differs from the hold, each change
read back from the server and audited (`recording.archive_hold`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from sqlalchemy import Table, and_, func, or_, select, update

from callgate.recording.retention import held_clause
from callgate.recording.store import RecordingRepository, RecordingRow, recording_row
from callgate.records.audit import AuditLog
from callgate.storage.models import Recording, utcnow

recordings = cast(Table, Recording.__table__)
FILES = ("recording.cgrec", "metadata.json")
LOCK_MODE = "COMPLIANCE"
BATCH = 1000  # recordings looked at per run


class ArchiveError(Exception):
    """The archive cannot be used, or one recording cannot be archived (the message says why)."""


class ArchiveSection(Protocol):
    bucket: str | None
    endpoint_url: str | None
    region: str
    prefix: str


@dataclass(frozen=True, slots=True)
class ArchiveTarget:
    bucket: str
    prefix: str = "callgate/recordings/"
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @classmethod
    def of(cls, section: ArchiveSection) -> ArchiveTarget | None:
        """The `[recording.archive]` settings; None while no bucket is set."""
        if section.bucket is None:
            return None
        return cls(section.bucket, section.prefix, section.endpoint_url, section.region)


@dataclass(slots=True)
class ArchiveRun:
    archived: list[dict[str, Any]] = field(default_factory=list)  # recording id, versions
    failed: dict[str, str] = field(default_factory=dict)  # recording id -> why
    holds: dict[str, bool] = field(default_factory=dict)  # recording id -> S3 legal hold set


def s3_client(target: ArchiveTarget) -> Any:
    """A boto3 S3 client for `target` (credentials from boto3's usual chain)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client(
        "s3", endpoint_url=target.endpoint_url, region_name=target.region, config=config
    )


def _client_error(exc: Exception) -> str:
    """`Code: message` of a botocore error, else the exception's text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _sha256_of(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def manifest(row: RecordingRow) -> bytes:
    """metadata.json: the row as the API shows it, plus what reading the file needs."""
    body = {**row.as_json(), "wrapped_key": row.wrapped_key, "archive": None}
    return json.dumps(body, sort_keys=True, indent=1).encode()


class RecordingArchive:
    def __init__(
        self,
        target: ArchiveTarget,
        repository: RecordingRepository,
        directory: Path,
        client: Any = None,
    ) -> None:
        self.target = target
        self._repository = repository
        self._engine = repository.engine
        self._directory = directory
        self._client = client if client is not None else s3_client(target)

    def check_bucket(self) -> None:
        """ArchiveError unless the bucket exists with Object Lock enabled."""
        try:
            found = self._client.get_object_lock_configuration(Bucket=self.target.bucket)
        except Exception as exc:  # botocore's errors: no such bucket, no lock, denied, down
            raise ArchiveError(
                f"bucket {self.target.bucket!r}: no Object Lock ({_client_error(exc)}); create it "
                "with Object Lock enabled"
            ) from None
        if found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ArchiveError(f"bucket {self.target.bucket!r} does not have Object Lock enabled")

    def pending(self, limit: int = BATCH) -> list[RecordingRow]:
        """Closed recordings not archived yet, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(recordings)
                .where(
                    recordings.c.state != "open",
                    recordings.c.archive_bucket.is_(None),
                    recordings.c.retain_until.is_not(None),
                )
                .order_by(recordings.c.started_at)
                .limit(limit)
            ).all()
        return [recording_row(r) for r in rows]

    def oldest_pending(self, now: datetime) -> datetime | None:
        """When the oldest closed recording still to archive ended (None: nothing waits)."""
        with self._engine.connect() as conn:
            found = conn.scalar(
                select(
                    func.min(func.coalesce(recordings.c.ended_at, recordings.c.started_at))
                ).where(
                    recordings.c.state != "open",
                    recordings.c.archive_bucket.is_(None),
                    recordings.c.retain_until > now,
                )
            )
        return _aware(found) if found is not None else None

    def archive(self, actor: str, limit: int = BATCH, now: datetime | None = None) -> ArchiveRun:
        """Copy every pending recording (the bucket checked first); one failure does not stop
        the others."""
        self.check_bucket()
        run = ArchiveRun()
        for row in self.pending(limit):
            try:
                run.archived.append(self.archive_one(row, actor, now or utcnow()))
            except ArchiveError as exc:
                run.failed[row.recording_id] = str(exc)
        self.sync_holds(actor, run, limit)
        return run

    def holds_to_mirror(self, limit: int = BATCH) -> list[tuple[RecordingRow, bool]]:
        """Archived recordings whose S3 legal hold differs from their hold, with the one wanted."""
        held = held_clause()
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(recordings, held.label("held"))
                .where(
                    recordings.c.archive_bucket.is_not(None),
                    or_(
                        and_(recordings.c.archive_hold.is_(False), held),
                        and_(recordings.c.archive_hold.is_(True), ~held),
                    ),
                )
                .order_by(recordings.c.started_at)
                .limit(limit)
            ).all()
        return [(recording_row(r), bool(r.held)) for r in rows]

    def sync_holds(self, actor: str, run: ArchiveRun, limit: int = BATCH) -> None:
        """Set or lift the S3 legal hold of every archived recording whose hold changed."""
        for row, hold in self.holds_to_mirror(limit):
            try:
                self.mirror_hold(row, hold, actor)
                run.holds[row.recording_id] = hold
            except ArchiveError as exc:
                run.failed[row.recording_id] = f"S3 legal hold: {exc}"

    def mirror_hold(self, row: RecordingRow, hold: bool, actor: str) -> None:
        """PutObjectLegalHold ON/OFF on each archived version, read back, then recorded in the
        row and audited (`recording.archive_hold`) in one transaction."""
        archived = row.archive
        if archived is None:
            return
        self._set_legal_hold(archived, hold)
        details = {"bucket": archived["bucket"], "key": archived["key"],
                   "versions": archived["versions"], "legal_hold": hold}  # fmt: skip
        with self._engine.begin() as conn:
            conn.execute(
                update(recordings)
                .where(recordings.c.recording_id == row.recording_id)
                .values(archive_hold=hold)
            )
            AuditLog.append_in(
                conn, actor, "recording.archive_hold", f"recording:{row.recording_id}", details
            )

    def _set_legal_hold(self, archived: dict[str, Any], hold: bool) -> None:
        status = "ON" if hold else "OFF"
        for name, version in sorted(archived["versions"].items()):
            where = {"Bucket": archived["bucket"], "Key": archived["key"] + name,
                     "VersionId": version}  # fmt: skip
            try:
                self._client.put_object_legal_hold(**where, LegalHold={"Status": status})
                found = self._client.get_object_legal_hold(**where)
            except Exception as exc:  # botocore's errors, connection failures
                raise ArchiveError(f"{where['Key']}: {_client_error(exc)}") from None
            if found.get("LegalHold", {}).get("Status") != status:
                raise ArchiveError(
                    f"{where['Key']} version {version}: the server reports legal hold "
                    f"{found.get('LegalHold', {}).get('Status')}, not {status}"
                )

    def _held(self, recording_id: str) -> bool:
        with self._engine.connect() as conn:
            return bool(
                conn.scalar(
                    select(func.count()).where(
                        recordings.c.recording_id == recording_id, held_clause()
                    )
                )
            )

    def archive_one(self, row: RecordingRow, actor: str, now: datetime) -> dict[str, Any]:
        until = _aware(row.retain_until) if row.retain_until is not None else None
        if until is None or until <= now:
            raise ArchiveError("its retention is over: nothing to lock")
        path = self._directory / row.file_name
        try:
            file_digest = _sha256_of(path)
        except OSError as exc:
            raise ArchiveError(f"{path}: {exc.strerror or exc}") from None
        if row.sha256 is not None and file_digest.hex() != row.sha256:
            raise ArchiveError("the file differs from its audited SHA-256: not archived")
        key = f"{self.target.prefix}{row.recording_id}/"
        held = self._held(row.recording_id)  # held already: locked with an S3 legal hold too
        versions: dict[str, str] = {}
        for name, body, digest in self._bodies(path, file_digest, manifest(row)):
            versions[name] = self._put(key + name, body, digest, until, held)
        for name, version in versions.items():
            self._confirm(key + name, version, until, held)
        self._record(row, key, versions, file_digest.hex(), until, actor, now, held)
        return {"recording_id": row.recording_id, "key": key, "versions": versions}

    def _bodies(
        self, path: Path, file_digest: bytes, meta: bytes
    ) -> Iterator[tuple[str, BinaryIO | bytes, bytes]]:
        with path.open("rb") as handle:
            yield FILES[0], handle, file_digest
        yield FILES[1], meta, hashlib.sha256(meta).digest()

    def _put(
        self, key: str, body: BinaryIO | bytes, digest: bytes, until: datetime, held: bool
    ) -> str:
        try:
            answer = self._client.put_object(
                **({"ObjectLockLegalHoldStatus": "ON"} if held else {}),
                Bucket=self.target.bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest).decode(),
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=until,
            )
        except Exception as exc:  # botocore's errors, connection failures
            raise ArchiveError(f"upload of {key}: {_client_error(exc)}") from None
        version = answer.get("VersionId")
        if not version:
            raise ArchiveError(f"upload of {key}: the server gave no version id (no versioning)")
        return str(version)

    def _confirm(self, key: str, version: str, until: datetime, held: bool) -> None:
        """The server itself must say the version is locked in compliance mode until `until`."""
        try:
            head = self._client.head_object(Bucket=self.target.bucket, Key=key, VersionId=version)
        except Exception as exc:
            raise ArchiveError(f"checking {key}: {_client_error(exc)}") from None
        mode, locked_until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        # S3 keeps retain-until to the second (some servers to the millisecond)
        if (
            mode != LOCK_MODE
            or locked_until is None
            or _aware(locked_until) < until.replace(microsecond=0)
        ):
            raise ArchiveError(
                f"{key} version {version}: the server reports lock {mode} until {locked_until}, "
                f"not {LOCK_MODE} until {until.isoformat()}"
            )
        if held and head.get("ObjectLockLegalHoldStatus") != "ON":
            raise ArchiveError(f"{key} version {version}: the server reports no legal hold")

    def _record(
        self, row: RecordingRow, key: str, versions: dict[str, str], file_sha256: str,
        until: datetime, actor: str, now: datetime, held: bool,
    ) -> None:  # fmt: skip
        details = {
            "legal_hold": held,
            "bucket": self.target.bucket,
            "key": key,
            "versions": versions,
            "file_sha256": file_sha256,
            "mode": LOCK_MODE,
            "retain_until": until.isoformat(),
        }
        with self._engine.begin() as conn:
            done = conn.execute(
                update(recordings)
                .where(
                    recordings.c.recording_id == row.recording_id,
                    recordings.c.archive_bucket.is_(None),
                )
                .values(
                    archive_bucket=self.target.bucket,
                    archive_key=key,
                    archive_versions=json.dumps(versions, sort_keys=True),
                    archived_at=now,
                    archive_hold=held,
                )
            )
            if not done.rowcount:  # another run (serve's, the CLI's) archived it meanwhile
                raise ArchiveError("archived meanwhile by another run; this copy is a duplicate")
            AuditLog.append_in(
                conn, actor, "recording.archived", f"recording:{row.recording_id}", details, now
            )

    def delete(self, row: RecordingRow) -> None:
        """Delete the archived versions of `row` (the purge, past its retention). The server
        refuses while its lock lasts: the exception goes up and the purge keeps the recording."""
        archived = row.archive
        if archived is None:
            return
        if archived.get("legal_hold"):  # the purge deletes only what nothing holds any more
            self._set_legal_hold(archived, False)
        for name, version in sorted(archived["versions"].items()):
            try:
                self._client.delete_object(
                    Bucket=archived["bucket"], Key=archived["key"] + name, VersionId=version
                )
            except Exception as exc:
                raise ArchiveError(f"{archived['key']}{name}: {_client_error(exc)}") from None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
