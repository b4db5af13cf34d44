"""Compliance recordings over HTTP (docs/recording.md, "Access").

    GET /api/recordings?party=&since=&until=&call_id=&held=&archive=&state=&limit=&cursor=
                                              admin, compliance: {items, next_cursor}, newest
                                              first, keyset pages (recording/search.py)
    GET /api/recordings/{recording_id}        admin, compliance: one, with its metadata
    GET /api/recordings/{recording_id}/audio  admin, compliance: stereo WAV decoded on demand,
                                              one byte range honoured (seeking in a player)
    POST /api/recordings/{recording_id}/playback  admin, compliance: {url, expires_at}, a
                                              short-lived URL of that recording's audio for an
                                              <audio> element (recording/playback.py), audited
    GET /api/recordings/{recording_id}/stream?ticket=  the audio, as /audio, opened by the
                                              ticket instead of a bearer token; its first use,
                                              and first use from each other client address,
                                              audited `recording.played` before any audio is
                                              sent; 60 requests then 2/s a ticket (429)
    GET /api/recordings/{recording_id}/bundle?format=wav|ogg  admin, compliance: the export
                                              bundle as a tar (recording/bundle.py), audited
                                              `recording.exported` by the reader

    PUT /api/recordings/{recording_id}/legal-hold  compliance: {hold, reason} (reason required
                                              to set a hold) -> the recording
    POST /api/recordings/purge                admin, compliance: delete what is past its
                                              retention and not held -> {deleted, held_kept, refused}

Every refusal of a signed-in user (403) or of a disabled account's ticket, every search (its
filters) and every playback is written to the audit log. Decoded audio is served from
recording/decoded.py's files, decoded off asyncio's default executor (503 when the queue is
full); errors name nothing of the server's (paths, key files) to the client, only to the log.
There is no way to delete a recording before its retention ends (docs/recording.md).
Built by `recordings_router()` around the running server's recording service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from callgate.accounts.handles import normal_handle
from callgate.accounts.records import UserRecord
from callgate.api.deps import READERS, ServicesDep, UserDep
from callgate.recording import playback
from callgate.recording.bundle_tar import pack
from callgate.recording.chunks import ChunkError
from callgate.recording.decoded import Busy, Decoded, DecodedFiles
from callgate.recording.keys import MasterKeyError
from callgate.recording.retention import HoldError, RecordingPurgeJob, RecordingRetention
from callgate.recording.search import ArchiveState, RecordingFilter, State, search
from callgate.recording.service import RecordingService
from callgate.recording.store import RecordingRow
from callgate.recording.writer import RecordingFailure
from callgate.records.audit import AuditLog
from callgate.records.query import BadCursor

log = logging.getLogger(__name__)
RecordingId = Annotated[str, Path(pattern="^[0-9a-f]{32}$")]
COMPLIANCE = frozenset({"compliance"})  # legal hold: compliance officers, not admins
EXPORTS_AT_ONCE = 2  # each decodes a whole recording
UNREADABLE = "recording unreadable (the server log says why)"  # paths, key files: log only
BUSY_RETRY_S = 5
RangeHeader = Annotated[str | None, Header(alias="Range")]  # over-long: ignored, not refused


class RecordingHold(BaseModel):
    """PUT /api/recordings/{id}/legal-hold."""

    model_config = ConfigDict(extra="forbid")

    hold: bool
    reason: str | None = Field(default=None, max_length=255)


def recordings_router(
    service: RecordingService,
    audit: AuditLog,
    purge_job: RecordingPurgeJob | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    on_hold: Callable[[], None] | None = None,
    decoded_files: DecodedFiles | None = None,
) -> APIRouter:
    """`on_hold` is called after a legal hold changed (serve's archive job mirrors it to S3);
    `decoded_files` keeps decoded audio for playback (the caller closes it at shutdown)."""
    router = APIRouter(prefix="/api/recordings", tags=["recordings"])
    exports = asyncio.Semaphore(EXPORTS_AT_ONCE)
    # threads of their own: a long export never holds asyncio's default pool (call setup, live
    # recording writes, audit writes)
    exporters = ThreadPoolExecutor(EXPORTS_AT_ONCE, thread_name_prefix="recording-export")
    files = decoded_files or DecodedFiles()
    uses, rates, warnings = playback.Uses(), playback.StreamRate(), playback.LogLimit()
    repository = service.repository
    job = purge_job or RecordingPurgeJob(RecordingRetention(repository, service.settings.directory))

    async def reader(
        user: UserRecord, action: str, target: str, roles: frozenset[str] = READERS
    ) -> None:
        """`roles` only (compliance and admin); anyone else is refused, and the refusal audited."""
        if user.role in roles:
            return
        await asyncio.to_thread(
            audit.append, user.handle, "recording.access_denied", target, {"wanted": action}
        )
        who = "compliance officers and admins" if "admin" in roles else "compliance officers"
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{who} only")

    async def described(rows: list[RecordingRow]) -> list[dict[str, Any]]:
        """Each row as JSON with `held_by`: what keeps it past its date (recording, call,
        user:<handle>)."""
        holders = await asyncio.to_thread(job.retention.held_by, rows)
        return [{**r.as_json(), "held_by": holders[r.recording_id]} for r in rows]

    async def found(recording_id: str) -> RecordingRow:
        row = await asyncio.to_thread(repository.get, recording_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such recording")
        return row

    @router.get("")
    async def list_recordings(
        user: UserDep,
        party: Annotated[
            str | None,
            Query(
                min_length=1, max_length=255, description="caller or callee: a handle or a number"
            ),
        ] = None,
        since: Annotated[
            datetime | None, Query(description="started at or after (ISO 8601)")
        ] = None,
        until: Annotated[datetime | None, Query(description="started before (ISO 8601)")] = None,
        call_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
        held: Annotated[bool | None, Query(description="kept by any legal hold")] = None,
        archive: Annotated[ArchiveState | None, Query()] = None,
        state: Annotated[State | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> dict[str, Any]:
        """Newest first; pass `next_cursor` back as `cursor` for the next page (same filters)."""
        where = RecordingFilter(
            party=None if party is None else normal_handle(party), since=_utc(since),
            until=_utc(until), call_id=call_id, held=held, archive=archive, state=state,
        )  # fmt: skip
        if where.since and where.until and where.since >= where.until:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                detail="since must be before until")  # fmt: skip
        target = f"call:{call_id}" if call_id else "recordings"
        await reader(user, "list", target)
        try:
            page = await asyncio.to_thread(search, repository.engine, where, limit, cursor)
        except BadCursor as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
        # who searched for whom: the filters (not the cursor), every page
        filters = {
            "party": where.party, "since": _text(where.since), "until": _text(where.until),
            "call_id": call_id, "held": held, "archive": archive, "state": state,
        }  # fmt: skip
        await asyncio.to_thread(
            audit.append, user.handle, "recording.searched", target,
            {k: v for k, v in filters.items() if v is not None},
        )  # fmt: skip
        return {"items": await described(list(page.rows)), "next_cursor": page.next_cursor}

    @router.get("/{recording_id}")
    async def show_recording(user: UserDep, recording_id: RecordingId) -> dict[str, Any]:
        await reader(user, "show", f"recording:{recording_id}")
        return (await described([await found(recording_id)]))[0]

    @router.get("/{recording_id}/audio", response_class=Response)
    async def recording_audio(
        user: UserDep,
        recording_id: RecordingId,
        range_: RangeHeader = None,
    ) -> Response:
        await reader(user, "audio", f"recording:{recording_id}")
        row = await found(recording_id)
        if row.state == "open":
            raise HTTPException(status.HTTP_409_CONFLICT, detail="the recording is still open")
        wav = await decoded(row)
        await asyncio.to_thread(
            audit.append, user.handle, "recording.played", f"recording:{recording_id}",
            {"call_id": row.call_id, "range": (range_ or "")[: playback.MAX_RANGE_CHARS] or None},
        )  # fmt: skip
        return await _ranged(files, wav, range_, lambda: decoded(row))

    async def decoded(row: RecordingRow) -> Decoded:
        """The decoded file (recording/decoded.py): decoded once, off the default executor."""
        from callgate.recording.audio import AudioError  # numpy: loaded at the first playback

        try:
            return await files.get(row.recording_id, lambda path: _decode(service, row, path))
        except Busy as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc),
                                headers={"Retry-After": str(BUSY_RETRY_S)}) from None  # fmt: skip
        except (AudioError, ChunkError, MasterKeyError, RecordingFailure, OSError) as exc:
            log.error("recording %s cannot be played: %s", row.recording_id, exc)
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=UNREADABLE) from None

    def ticket_key() -> bytes:
        try:
            return playback.ticket_key(service.master_key())
        except RecordingFailure as exc:  # its text names the key file: the log only
            log.error("playback tickets unavailable: %s", exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="recordings are unavailable (the server log says why)",
            ) from None

    @router.post("/{recording_id}/playback")
    async def playback_url(user: UserDep, recording_id: RecordingId) -> dict[str, Any]:
        """A URL of this recording's audio for an <audio> element: no bearer token needed, for
        this officer, this recording, a few minutes (recording/playback.py)."""
        await reader(user, "playback", f"recording:{recording_id}")
        row = await found(recording_id)
        if row.state == "open":
            raise HTTPException(status.HTTP_409_CONFLICT, detail="the recording is still open")
        key = ticket_key()
        ticket = playback.mint(recording_id, user.handle)
        expires_at = _iso(ticket.expires)
        await asyncio.to_thread(
            audit.append, user.handle, "recording.playback_url", f"recording:{recording_id}",
            {"call_id": row.call_id, "expires_at": expires_at},
        )  # fmt: skip
        url = f"/api/recordings/{recording_id}/stream?ticket={playback.encode(key, ticket)}"
        return {"url": url, "expires_at": expires_at}

    @router.get("/{recording_id}/stream", response_class=Response)
    async def recording_stream(
        request: Request,
        services: ServicesDep,
        recording_id: RecordingId,
        ticket: Annotated[str, Query(min_length=1, max_length=playback.MAX_TICKET_CHARS)],
        range_: RangeHeader = None,
    ) -> Response:
        """The audio as /audio serves it, opened by a playback ticket; its first use, and its
        first use from each other client address, audited."""
        target = f"recording:{recording_id}"
        try:
            granted = playback.verify(ticket_key(), ticket, recording_id)
        except playback.TicketError as exc:
            if warnings.allow():  # the reason and the recording, never the ticket
                held = warnings.held_back()
                log.warning("playback ticket refused for recording %s: %s%s", recording_id, exc,
                            f" ({held} more not logged)" if held else "")  # fmt: skip
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
        wait = rates.take(granted)
        if wait > 0:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                detail="too many requests with this playback URL",
                                headers={"Retry-After": str(max(1, round(wait)))})  # fmt: skip
        user = await asyncio.to_thread(services.accounts.get, granted.handle)
        if user is None or user.disabled:
            await asyncio.to_thread(
                audit.append, granted.handle, "recording.access_denied", target,
                {"wanted": "audio", "via": "playback-url",
                 "why": "account removed" if user is None else "account disabled"},
            )  # fmt: skip
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="the account is disabled or removed"
            )
        await reader(user, "audio", target)
        row = await found(recording_id)
        wav = await decoded(row)
        address = request.client.host if request.client is not None else "unknown"
        if not uses.known(granted, address):
            details: dict[str, Any] = {"call_id": row.call_id, "via": "playback-url",
                       "expires_at": _iso(granted.expires), "client": address}  # fmt: skip
            if not uses.first_address(granted):
                details["another_address"] = True  # the ticket was used from elsewhere first
            await asyncio.to_thread(audit.append, user.handle, "recording.played", target, details)
            uses.mark(granted, address)  # only once the entry is written
        return await _ranged(files, wav, range_, lambda: decoded(row))

    @router.get(
        "/{recording_id}/bundle",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-tar": {}}, "description": "the bundle"}},
    )
    async def recording_bundle(
        user: UserDep,
        recording_id: RecordingId,
        audio: Annotated[Literal["wav", "ogg"], Query(alias="format")] = "wav",
    ) -> StreamingResponse:
        """The export bundle (`callgate recording verify` checks it offline) as a tar."""
        await reader(user, "export", f"recording:{recording_id}")
        if signing_key is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no audit signing key")
        row = await found(recording_id)
        if row.state == "open":
            raise HTTPException(status.HTTP_409_CONFLICT, detail="the recording is still open")
        from callgate.recording.bundle import BundleError  # numpy: loaded at the first export

        work = FilePath(tempfile.mkdtemp(prefix="callgate-export-"))  # 0700: decrypted audio
        try:
            async with exports:
                tar = await asyncio.get_running_loop().run_in_executor(
                    exporters, _bundle_tar, service, row, audit, signing_key, work, user.handle,
                    audio,
                )  # fmt: skip
        except (BundleError, ChunkError, MasterKeyError, RecordingFailure, OSError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            log.error("recording %s cannot be exported: %s", recording_id, exc)
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=UNREADABLE) from None
        headers = {
            "Content-Disposition": f'attachment; filename="recording-{recording_id}.tar"',
            "Content-Length": str(tar.stat().st_size),
            "Cache-Control": "no-store",
        }
        return StreamingResponse(_read_then_remove(tar, work), media_type="application/x-tar",
                                 headers=headers)  # fmt: skip

    @router.put("/{recording_id}/legal-hold")
    async def hold_recording(
        user: UserDep, recording_id: RecordingId, body: RecordingHold
    ) -> dict[str, Any]:
        """Keep the recording past its retention (or release it); compliance officers only."""
        await reader(user, "legal-hold", f"recording:{recording_id}", COMPLIANCE)
        try:
            row = await asyncio.to_thread(
                job.retention.hold, recording_id, body.hold, body.reason, user.handle
            )
        except HoldError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such recording")
        if on_hold is not None:
            on_hold()
        return (await described([row]))[0]

    @router.post("/purge")
    async def purge_recordings(user: UserDep) -> dict[str, Any]:
        """Delete recordings past their retention that no legal hold keeps (audited each)."""
        await reader(user, "purge", "recordings")
        result = await job.run_once(user.handle)
        return {"deleted": result.deleted, "held_kept": result.held_kept, "refused": result.refused}

    return router


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # no offset given: UTC
    return value


def _text(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _decode(service: RecordingService, row: RecordingRow, path: FilePath) -> None:
    """The WAV written as it is decoded, from the stored file read a chunk at a time."""
    from callgate.recording.bundle import stored_packets, write_audio

    stored = service.settings.directory / row.file_name
    write_audio(stored_packets(row, stored, service.master_key()), row.codec, path)


def _bundle_tar(
    service: RecordingService, row: RecordingRow, audit: AuditLog, key: Ed25519PrivateKey,
    work: FilePath, actor: str, audio: str,
) -> FilePath:  # fmt: skip
    from callgate.recording.bundle import export_bundle

    bundle = work / "bundle"
    export_bundle(row, service.settings.directory, service.master_key(), audit, key, bundle,
                  actor, audio)  # fmt: skip
    pack(bundle, work / "bundle.tar")
    shutil.rmtree(bundle)
    return work / "bundle.tar"


def _read_then_remove(path: FilePath, work: FilePath) -> Iterator[bytes]:
    """The file in 1 MiB pieces; its directory removed when done or abandoned."""
    try:
        with path.open("rb") as handle:
            yield from iter(lambda: handle.read(1 << 20), b"")
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


async def _ranged(
    files: DecodedFiles, wav: Decoded, header: str | None, again: Callable[[], Awaitable[Decoded]]
) -> Response:
    """The whole WAV, or the one range asked for (RFC 9110 §14.2), read from the decoded file a
    piece at a time; 416 when unsatisfiable. `again` decodes anew when the file expired in
    between (its timer ran just now)."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    for attempt in range(2):
        wanted = playback.byte_range(header, wav.size)
        if wanted == "unsatisfiable":
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{wav.size}"}
            )
        (start, end), code = wanted or (0, wav.size - 1), 206 if wanted else 200
        try:
            pieces = await files.pieces(wav, start, end)
        except FileNotFoundError:
            if attempt:
                raise
            wav = await again()
            continue
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{wav.size}"
        headers["Content-Length"] = str(end + 1 - start)
        return StreamingResponse(pieces, status_code=code, media_type="audio/wav", headers=headers)
    raise AssertionError("unreachable")
