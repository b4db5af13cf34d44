"""`RecordingService`: what the server needs to record calls — the master key, the recordings
directory, the table — and whether it can record right now (`health()`).

If the master key cannot be loaded the service starts *unavailable*: calls under a
recording-required rule then end `recording-unavailable` and `/healthz` says why; other calls
are unaffected. `recover()` closes recordings a dead server left open.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from callgate.recording import keys
from callgate.recording import recorder as recorder_module
from callgate.recording.chunks import HEADER_BYTES, ChunkError, iter_chunks, seal
from callgate.recording.codecs import BY_ANCHOR_CODEC as CODECS
from callgate.recording.codecs import OPUS, leg_codecs, recording_codec
from callgate.recording.recorder import RecorderLimits, StreamRecorder
from callgate.recording.retention import RetentionPolicy
from callgate.recording.store import RecordingRepository, RecordingRow
from callgate.recording.writer import ChunkWriter, RecordingFailure

log = logging.getLogger(__name__)

CODEC = OPUS  # the default: calls between callgate's own clients
FORMAT = "callgate-recording/1"


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    directory: Path
    key_file: Path
    min_free_bytes: int = 64 << 20
    max_active: int = 100
    prompt: bool = False  # beeps to both parties when a recorded call connects
    prompt_file: Path | None = None  # with `prompt`: this announcement instead of the beeps
    limits: RecorderLimits = field(default_factory=RecorderLimits)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)


class RecordingSection(Protocol):
    """The `[recording]` table of the configuration (config.py, RecordingSettingsModel)."""

    directory: Path | None
    key_file: Path | None
    min_free_mb: int
    flush_interval_s: float
    silence_limit_s: float
    max_active: int
    prompt: bool
    prompt_file: Path | None
    retention_days: int
    retention_by_rule: dict[str, int]


def recording_settings(section: RecordingSection, data_dir: Path) -> RecordingSettings:
    """The `[recording]` settings with the data directory's defaults filled in."""
    return RecordingSettings(
        directory=section.directory or data_dir / "recordings",
        key_file=section.key_file or keys.master_key_path(data_dir),
        min_free_bytes=section.min_free_mb << 20,
        max_active=section.max_active,
        prompt=section.prompt,
        prompt_file=section.prompt_file,
        limits=RecorderLimits(section.flush_interval_s, section.silence_limit_s),
        retention=RetentionPolicy(section.retention_days, dict(section.retention_by_rule)),
    )


@dataclass(slots=True)
class ActiveRecording:
    row: dict[str, Any]
    recorder: StreamRecorder
    parties: Mapping[str, Mapping[str, Any]]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _participants(parties: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": role, **{k: v for k, v in party.items() if v is not None}}
        for role, party in parties.items()
    ]


def _close_when_created(job: asyncio.Future[ChunkWriter]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().close()


class RecordingService:
    def __init__(
        self,
        repository: RecordingRepository,
        settings: RecordingSettings,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.problem: str | None = None
        self.failed_total = 0
        self.active: dict[str, ActiveRecording] = {}
        self._starting = 0  # start() calls still creating their file and row
        self._master: bytes | None = None
        self._refused = False
        try:
            self._master = keys.load_master_key(settings.key_file, env)
        except keys.MasterKeyError as exc:
            self.problem = f"recording master key: {exc}"
            log.error("%s; calls that must be recorded will not connect", self.problem)

    @property
    def available(self) -> bool:
        return self._master is not None and not self._refused and not self.stalled

    @property
    def stalled(self) -> str | None:
        """Why recording is stopped for now: a disk write of its past its deadline (recorder.py
        `RecordingIO`); new recorded calls are refused until it returns."""
        return recorder_module.IO.stalled

    def refuse(self, problem: str) -> None:
        """Record nothing from now on (the media anchor cannot run: media/internals.py): calls
        that must be recorded end `recording-unavailable`, `/healthz` says why."""
        self._refused = True
        self.problem = problem if self.problem is None else f"{self.problem}; {problem}"

    def health(self) -> dict[str, Any]:
        problem = "; ".join(p for p in (self.problem, self.stalled) if p)
        return {
            "ok": self.available,
            **({"error": problem} if problem else {}),
            "active": len(self.active),
            "failed": self.failed_total,
        }

    def master_key(self) -> bytes:
        if self._master is None:
            raise RecordingFailure(self.problem or "no master key")
        return self._master

    def _check_available(self) -> None:
        if not self.available:
            raise RecordingFailure(self.problem or self.stalled or "recording unavailable")

    # -- one call ----------------------------------------------------------------------------

    async def start(
        self,
        call_id: str,
        parties: Mapping[str, Mapping[str, Any]],
        policy_rule: str | None,
        on_failure: Callable[[str], None],
        codec: str = "opus",
        callee_codec: str | None = None,
    ) -> StreamRecorder:
        """Create the row, the file and its recorder; RecordingFailure when it cannot. `codec`:
        the anchor's ("opus", or "pcmu"/"pcma" for a SIP phone or trunk), stored as it came;
        `callee_codec`: the callee's, when the anchor transcodes (default: the same)."""
        if codec not in CODECS or (callee_codec or codec) not in CODECS:
            raise RecordingFailure(f"cannot record codec {codec!r}")
        self._check_available()
        master = self.master_key()
        if len(self.active) + self._starting >= self.settings.max_active:
            raise RecordingFailure(f"{self.settings.max_active} calls are being recorded already")
        self._starting += 1
        try:
            stored = recording_codec(codec, callee_codec)
            row, writer = await self._create(call_id, parties, policy_rule, master, stored)
        finally:
            self._starting -= 1

        def failed(reason: str) -> None:
            self.failed_total += 1
            on_failure(reason)

        recording_id = row["recording_id"]
        recorder = StreamRecorder(recording_id, writer, self.settings.limits, failed)
        self.active[recording_id] = ActiveRecording(
            {**row, "started_at": _now()}, recorder, parties
        )
        recorder.start()
        return recorder

    async def _create(
        self,
        call_id: str,
        parties: Mapping[str, Mapping[str, Any]],
        policy_rule: str | None,
        master: bytes,
        codec: str,
    ) -> tuple[dict[str, Any], ChunkWriter]:
        recording_id = uuid.uuid4().hex
        path = self.settings.directory / f"{recording_id}.cgrec"
        key = keys.new_recording_key()
        row = {
            "recording_id": recording_id,
            "call_id": call_id,
            "file_name": path.name,
            "key_id": keys.key_id(master),
            "wrapped_key": keys.wrap(master, key),
            "codec": codec,
            "policy_rule": policy_rule,
            "metadata_json": json.dumps({"participants": _participants(parties)}),
            "retention": self.settings.retention.period(policy_rule),
        }
        writer = await self._open(path, recording_id, key)
        try:
            await asyncio.to_thread(self.repository.create, row, _now())
        except Exception as exc:
            writer.close()
            raise RecordingFailure(f"recording record not written: {type(exc).__name__}") from exc
        return row, writer

    async def _open(self, path: Path, recording_id: str, key: bytes) -> ChunkWriter:
        """The file, created in a recording thread (recorder.py `RecordingIO`, not the default
        executor) within the durability deadline; RecordingFailure when it is not."""
        loop = asyncio.get_running_loop()
        limits = self.settings.limits
        deadline = limits.flush_interval + limits.durable_within
        job = recorder_module.IO.run(
            loop, deadline, ChunkWriter, path, recording_id, key, self.settings.min_free_bytes
        )
        try:
            return await asyncio.wait_for(asyncio.shield(job), deadline)
        except TimeoutError:
            # created later, if ever: closed then (a file with its header only, no row)
            job.add_done_callback(_close_when_created)
            raise RecordingFailure(f"{path.name} not created within {deadline:g} s") from None

    async def set_codecs(self, recording_id: str, caller: str, callee: str) -> None:
        """The anchor's codecs of each party once the callee answered: a callee that took a
        fallback codec (transcoded) changes the recording's `codec` (codecs.py), stored before
        its packets are; RecordingFailure when it cannot be."""
        active = self.active.get(recording_id)
        if active is None or caller not in CODECS or callee not in CODECS:
            raise RecordingFailure(f"cannot record codecs {caller!r} and {callee!r}")
        codec = recording_codec(caller, callee)
        if codec == active.row["codec"]:
            return
        try:
            await asyncio.to_thread(self.repository.set_codec, recording_id, codec, _now())
        except RecordingFailure:
            raise
        except Exception as exc:
            raise RecordingFailure(f"recording codec not stored: {type(exc).__name__}") from exc
        active.row["codec"] = codec

    async def set_party(self, recording_id: str, role: str, party: Mapping[str, Any]) -> None:
        """Who a party of an open recording turned out to be (a ring group's member who
        answered: the callee), stored before that party's packets are; RecordingFailure when
        it cannot be."""
        active = self.active.get(recording_id)
        if active is None:
            raise RecordingFailure(f"no open recording {recording_id}")
        # named before the write: a call ending meanwhile cancels this, but the write's thread
        # runs on and may commit (audited), so `finish`'s metadata must name the party too
        previous = active.parties
        active.parties = {**previous, role: dict(party)}
        try:
            await asyncio.to_thread(
                self.repository.set_participants,
                recording_id,
                _participants(active.parties),
                role,
                _now(),
            )
        except RecordingFailure:
            active.parties = previous
            raise
        except Exception as exc:
            active.parties = previous
            raise RecordingFailure(f"recording party not stored: {type(exc).__name__}") from exc

    async def finish(self, recording_id: str) -> None:
        """Close the recording: last chunk, metadata, `recording.closed|failed` in the audit."""
        active = self.active.pop(recording_id, None)
        if active is None:
            return
        recorder = active.recorder
        await recorder.close()
        state = "failed" if recorder.failure else "closed"
        ended = _now()
        metadata = self.metadata(active, ended, state)
        writer = recorder.writer
        await asyncio.to_thread(
            self.repository.finish,
            recording_id,
            state,
            ended,
            chunks=len(writer.chunks),
            size=writer.bytes,
            file_sha256=writer.sha256,
            metadata=metadata,
            failure=recorder.failure,
        )

    def metadata(self, active: ActiveRecording, ended: datetime, state: str) -> dict[str, Any]:
        """What the recording is, in the spirit of RFC 7865: the session, its participants, the
        streams each sent, and the chunk list that lets a bundle be checked offline."""
        row, recorder = active.row, active.recorder
        participants = _participants(active.parties)
        codecs = dict(zip(("caller", "callee"), leg_codecs(row["codec"]), strict=True))
        streams = [
            {
                "label": leg,
                "sent_by": leg,
                "codec": codecs[leg],  # as the party sent it (a transcoded call: each its own)
                "channel": "left" if leg == "caller" else "right",
                "packets": recorder.packets[leg],
                "first_arrival": recorder.first_arrival.get(leg),
            }
            for leg in ("caller", "callee")
        ]
        return {
            "format": FORMAT,
            "recording_id": row["recording_id"],
            "session": {"call_id": row["call_id"], "policy_rule": row["policy_rule"]},
            "participants": participants,
            "streams": streams,
            "started_at": _iso(row["started_at"]),
            "ended_at": _iso(ended),
            "state": state,
            "failure": recorder.failure,
            "codec": row["codec"],
            "cipher": "AES-256-GCM, per-recording key wrapped with AES-KW",
            "key_id": row["key_id"],
            "chunk_sha256": list(recorder.writer.chunks),
        }

    # -- start-up ----------------------------------------------------------------------------

    def recover(self) -> int:
        """Close recordings left `open` by a server that died: keep every whole chunk, seal a
        last one after them, mark them `interrupted` in the table and the audit log."""
        if self._master is None:
            return 0
        count = 0
        for row in self.repository.open_ones():
            try:
                self._recover_one(row)
                count += 1
            except (OSError, RecordingFailure, keys.MasterKeyError) as exc:
                log.error("recording %s could not be recovered: %s", row.recording_id, exc)
        return count

    def _recover_one(self, row: RecordingRow) -> None:
        path = self.settings.directory / row.file_name
        data = path.read_bytes() if path.exists() else b""
        chunks, kept_bytes, note = [], 0, None
        try:
            for chunk in iter_chunks(data):
                chunks.append(chunk.sha256)
                kept_bytes += len(chunk.raw)
        except ChunkError as exc:
            note = str(exc)
        keep = HEADER_BYTES + kept_bytes if data else 0
        key = keys.unwrap(self.master_key(), row.wrapped_key)
        if data:
            last = seal(key, row.recording_id, len(chunks), True, b"")
            with path.open("r+b") as handle:
                handle.truncate(keep)
                handle.seek(keep)
                handle.write(last)
                handle.flush()
                os.fsync(handle.fileno())
            chunks.append(hashlib.sha256(last).hexdigest())
        content = path.read_bytes() if data else b""
        ended = _now()
        failure = "the server stopped during the recording" + (f" ({note})" if note else "")
        metadata = {
            **row.metadata,
            "format": FORMAT,
            "recording_id": row.recording_id,
            "session": {"call_id": row.call_id, "policy_rule": row.policy_rule},
            "started_at": _iso(row.started_at),
            "ended_at": _iso(ended),
            "state": "interrupted",
            "failure": failure,
            "codec": row.codec,
            "key_id": row.key_id,
            "chunk_sha256": chunks,
        }
        self.repository.finish(
            row.recording_id,
            "interrupted",
            ended,
            chunks=len(chunks),
            size=len(content),
            file_sha256=hashlib.sha256(content).hexdigest(),
            metadata=metadata,
            failure=failure,
        )
